"""StarDist2D: star-convex polygons, ``2D_versatile_fluo`` when cached locally, else trained.

Myofibre cross-sections are compact, mostly convex polygons, so 32 rays describe them well.

Weights (never downloaded)
    ``2D_versatile_fluo`` is looked for where ``StarDist2D.from_pretrained`` caches it (the
    Keras cache: ``$KERAS_HOME`` or ``~/.keras``, then ``models/StarDist2D/2D_versatile_fluo/``,
    as extracted by Keras 3 (``2D_versatile_fluo_extracted/``) or Keras 2 (the folder itself),
    or the downloaded ``2D_versatile_fluo.zip`` there, which is then extracted under the
    workdir), or in the model folder given as ``Params(pretrained_model=...)`` (a folder with
    ``config.json`` and ``weights_best.h5``). The folder is loaded with
    ``StarDist2D(None, name, basedir)``, never with ``from_pretrained`` (which downloads).
    ``pretrained``: ``"auto"`` (use when present, else train from scratch; one log line says
    which), ``"require"`` (raise :class:`PretrainedUnavailable` when absent), ``"never"``.
Input
    A model trained here takes both channels (membrane, mitochondrial mass). The versatile
    model is a *nucleus* model with one channel: it finds bright, roundish, densely packed blobs
    on a dark background. Neither channel alone looks like that: the membrane marker is bright
    on the borders (a nucleus model would segment the gaps), the mass channel is bright inside
    fibres but also textured. It is fed the *fibre interior* ``max(mass - membrane, 0)``
    re-normalised (1-99.8 %): bright fibre interiors separated by dark membranes and gaps, the
    closest thing to a nucleus image. A fine-tuned versatile model keeps that input.
Training
    :meth:`fit` trains (from scratch, ``source = "trained from scratch"``) or fine-tunes
    (``"fine-tuned"``) on the train split: 32 rays, grid (2, 2), random patches with flips,
    90-degree rotations, scale jitter (x0.5-1.5, ``zoom``) and intensity jitter, no
    TensorBoard. One train section (the last of
    the modality with most sections) is held out when there are at least 3, for the
    validation loss and for ``optimize_thresholds`` (probability and NMS thresholds); with
    fewer, the thresholds are optimised on the training sections. The steps run in a plain
    ``train_on_batch`` loop (:func:`train_steps`) over StarDist's own batches, loss and
    optimiser instead of ``StarDist2D.train``, whose ``keras.Model.fit`` of a Python
    generator doubles the time of a step on a CPU: the default training took 164 s and 207 s
    in two fresh-clone reports (73ac78d, d06a2c3) instead of 331-392 s (fresh clones of
    1f5f34b), with byte-identical weights and predictions (the same ``table3.csv``).
    Twice the epochs (112, 335 s) in the time saved gained nothing overall (tuning set
    mean IoU / F1@0.5 0.872 / 0.882 -> 0.872 / 0.874, real left half 0.867 -> 0.861 mean
    IoU, S11 / 10 F1 0.911 -> 0.925, mean IoU 0.930 -> 0.921), so the report keeps the time.
Tuning (default synthetic data, test split, 2 CPU cores, from scratch)
    The distance regression is what limits the polygons' IoU (32 rays at 24 px per fibre can
    reach a mean IoU of 0.91-0.95 on the ground truth); it improves steadily with training:
    24 epochs of 25 steps, distance-loss weight 0.2, lr 3e-3: mean IoU 0.77, A%(>0.8) 42;
    weight 1.0: 0.78 / 55; 48 epochs: 0.83 / 73; lr 6e-3: 0.84 / 75; 64 epochs: 0.85 / 83
    (about 280 s). Batch normalisation (0.83 / 74, 30 % slower), 32 base filters (slower,
    worse at equal time), 128 px patches (0.80 / 64) and lr 1e-2 (diverged) did not help.
    Default: 56 epochs of 25 steps of 4 patches, weight 1.0, lr 6e-3 (cosine decay); 72 epochs
    took 450 s on the calibrated, randomised synthetic data and kept the report over 15 minutes
    (times with ``StarDist2D.train``; :func:`train_steps` halves them).
    Training on the train split plus the U-Net's pretraining sections (same steps; a
    pretraining section held out for the thresholds) was worse on every check: synthetic
    tuning set (seed 2027) F1@0.5 0.882 -> 0.647, real left half 0.956 -> 0.567, S11 / 10
    0.911 -> 0.665 (412 -> 246 objects).
    Scale jitter x0.5-1.5 instead of the U-Net's x0.75-1.33 (same steps, same time; the
    models of this and the default, both with the membrane redrawing below; F1@0.5 / mean
    IoU): validation P04 0.958 / 0.879 -> 0.964 / 0.879, S25 0.871 / 0.908 -> 0.900 /
    0.914; real left half 0.951 / 0.864 -> 0.956 / 0.867; S11 / 10 0.895 / 0.931 ->
    0.911 / 0.930 (406 -> 412 objects): the network starts to find small fibres.
    On that data the default polygons reach mean IoU 0.715 / F1@0.5 0.72 on the test split
    (0.747 / 0.761 with the post-processing below, fresh-clone report of 18254c8): the
    polygons come out too round and too small (matched area 0.75-0.9 of the ground truth's),
    though 32 rays at 24 px can reach 0.935 on the ground truth. Tried without a gain: a
    4-level U-Net (0.718 / 0.736, 406 s), predicting each section at its true fibre size
    (0.694 / 0.718), 20 epochs (0.668). Training is bit-identical from run to run in a fresh
    process on one machine; OpenCV runs one thread during training (5 % faster, same weights).
Prediction
    ``predict_instances`` on the working-scale image, in ``n_tiles`` when it is larger than
    ``predict_tile`` pixels. The polygons are then used as detections: each is redrawn along
    its fibre's membrane (:func:`~.membrane.refine_to_membrane`: seeded watershed of the
    membrane inside the fibre, pieces of fibre interior without a polygon added as fibres
    the network missed, gaps out, two polygons in one fibre merged; then grown to the
    fibre's mass edge, :func:`~.membrane.grow_to_mass_edge`, formerly to the membrane's
    ridge; the steps and their reasons are in :mod:`.membrane`), objects over two fibres
    divided along a faint membrane line (:func:`~.membrane.split_on_faint_membrane`), and
    objects on empty background are dropped (:func:`~.membrane.drop_background_objects`).
    Chosen on the synthetic validation sections, the real panel's left half and the S11
    geometry at a tenth of full size, with the models of commit 926ec35 (F1@0.5 / mean IoU;
    polygons alone -> polygons grown to the membrane, commit 18254c8 -> redrawn): P04 0.780 / 0.637 ->
    0.826 / 0.777 -> 0.958 / 0.879; S25 0.677 / 0.655 -> 0.741 / 0.805 -> 0.871 / 0.908; real
    left half 0.932 / 0.759 -> 0.928 / 0.765 -> 0.951 / 0.864; S11 / 10 0.706 / 0.702 ->
    0.690 / 0.680 -> 0.895 / 0.931 (500 -> 556 -> 406 objects for 488 fibres). Each step
    leaving one out (S11 / 10; P04): no merging 0.807 / 0.864; 0.840 / 0.828 (478 objects);
    no relative-mass cut 0.882 / 0.918; 0.958 / 0.879 (real left mean IoU 0.840); no growth
    to the ridge 0.886 / 0.797; 0.964 / 0.730; erosion 1 px instead of 3 0.812 / 0.929
    (502 objects). What remains is fibres the network never detects (missed fibres: median
    area 162 px at the working scale against 1,525 for the found ones, elongated), which no
    post-processing can add.
    Last step, grown to the mass edge (:func:`~.membrane.grow_to_mass_edge`, ``edge_mass``
    0.5 of the object's median mass within ``target_diameter / 9``) instead of
    ``target_diameter / 18`` px to the membrane's ridge: the redrawn objects stopped at the
    membrane's inner side and came out 8-19 % too small on synthetic sections with wide
    membranes (too large by 8-12 % on others), where the U-Net's were within 1-7 %. With the
    default model (F1@0.5 / mean IoU, ridge -> mass edge): synthetic tuning set (seed 2027,
    14 sections) 0.882 / 0.872 -> 0.881 / 0.918; S11 / 10 0.911 / 0.930 -> 0.911 / 0.953
    (412 objects both); real left half 0.956 / 0.867 -> 0.962 / 0.855 (objects 5 % larger
    than the annotation there, 2 % smaller before: the real panel's mass reaches into its
    membranes, which the synthetic look does not draw). Not adopted: 0.6 / 0.7 of the median
    (tuning set mean IoU 0.911 / 0.892, real left 0.858 / 0.853); growth in both ways
    (ridge, then mass edge: tuning set 0.900, real left 0.848); growth only uphill on the
    membrane as well (0.917, real left 0.858); splitting the membrane band between
    neighbouring fibres and gaps (0.841); StarDist's own object probability as the extent
    (at most 0.767: its foreground overlaps the annotation's with a Dice of 0.76-0.82).
    Retrained at another network scale (with the ridge step): ``net_diameter`` 32 worse
    everywhere (tuning set 0.839 / 0.864, real left F1 0.921, S11 / 10 F1 0.799), 18 no
    better (tuning set 0.872 / 0.872, real left 0.959 / 0.864, S11 / 10 0.902 / 0.929).
    Objects over two fibres (:func:`~.membrane.split_on_faint_membrane`, ``split_contrast``
    0.3, parts of at least ``split_min_fraction`` 0.12 of a fibre's area), after the growth:
    where the membrane between two fibres is much fainter than elsewhere the network places
    one polygon over both (25 fibres of section S36 of a second tuning set, seed 2031, lay in
    such objects; mean IoU there 0.746). Dividing an object along a faint membrane line that
    stands out from its interior took the two tuning sets (28 sections, F1@0.5 / mean IoU)
    from 0.883 / 0.909 to 0.885 / 0.917 (S36 0.746 -> 0.926) and left the real left half
    (0.962 / 0.855) and S11 / 10 (0.911 / 0.953, 412 objects) unchanged, digit for digit;
    0.08-0.16 of a fibre's area and contrasts 0.15-0.5 give the same within 0.001. Markers
    from the distance transform instead (to divide along broken lines too) gained nothing
    (h 0.1 of a diameter) or cost F1 on the real left half (h 0.05: 0.962 -> 0.956);
    dividing before the growth instead of after it was a wash (tuning sets 0.887 / 0.917,
    real left half 0.964 / 0.859). The U-Net and Cellpose do not use the step: on the
    tuning sets it was no better for them (U-Net 0.841 / 0.927 -> 0.840 / 0.927, Cellpose
    0.910 / 0.911 -> 0.909 / 0.911).
    Missed fibres (``fill_fraction`` 0.04 of a fibre's area since the ridge trim below, 0.06
    before; interior pieces after the erosion): the network misses small fibres, and a neighbour's object then grows over
    part of such a fibre, often over its centre as well. Seeding every interior piece no
    polygon claims (F1@0.5 / mean IoU, the models of one machine, without -> with): tuning
    sets seed 2027 0.867 / 0.920 -> 0.879 / 0.921, seed 2031 0.887 / 0.914 -> 0.886 / 0.917
    (fibres sharing an object in the two sets: 12 -> 4); real left half 0.968 / 0.854 ->
    0.971 / 0.857; S11 / 10 0.908 / 0.955 -> 0.919 / 0.954 (413 -> 422 objects for 488
    fibres); a hard set (seed 4001, JPEG quality 40-65, a quarter or more of the membrane
    dropped) 0.873 / 0.893 -> 0.874 / 0.892. 0.03 of a fibre's area found more noise (real
    left half F1 0.963), 0.1 fewer fibres (seed 2027 F1 0.873).
    Not adopted: JPEG round trips in the training augmentation (a quarter of the patches,
    quality 35-90, as the synthetic acquisition; none of the 8 train sections is
    compressed, test section P02 is): the retrained model was worse on the tuning sets
    (0.858 / 0.916, 0.871 / 0.913) and on the hard set itself (0.851 / 0.887).
What limits test section P02 (mean IoU 0.783; 0.913-0.954 on P06, S11, S60)
    Its objects are 13 % larger than the annotation (median area ratio 1.13; 0.98-1.04 on
    the other test sections): its gaps carry mitochondrial mass (median 0.57 of the fibres')
    and its JPEG compression (quality 53) blurs it into the fibres' edges, so the mass edge
    lies outside the annotated one. That is not all of it: shrinking every object by 1 px
    takes P02 only to 0.795 (P06 falls to 0.774), and 35 of its 151 matched fibres are below
    0.75, in objects over a neighbour, over a missed small fibre (the 15 fibres it misses
    have a median area of 133 px against 389 for all its fibres) or short of an elongated
    one. Tried on the two tuning sets, the hard set, the real left half and S11 / 10 with
    the models of a fresh ``make report`` of f110fe4 (F1@0.5 / mean IoU there 0.879 / 0.919,
    0.891 / 0.915, 0.873 / 0.885, 0.966 / 0.856, 0.918 / 0.952), none adopted: a growth
    threshold above the gaps' mass (a quarter of the way from the mass on the membrane's
    ridge to the object's median: 0.873 / 0.871, 0.886 / 0.881, 0.860 / 0.814, 0.960 /
    0.844, 0.918 / 0.941; objects now too small); cutting objects at the membrane's half
    maximum (tuning set mean IoU 0.801: the annotation takes in the membrane's inner half);
    ``fill_fraction`` 0.03 and 0.02 (hard set 0.870 / 0.886, 0.871 / 0.885; real left F1
    0.959, 0.954); ``refine_to_membrane``'s ``merge_membrane`` 0.1 and 0.05 (no fewer shared
    objects; S11 / 10 F1 0.855 at 0.05); object probabilities averaged over four flips
    (0.879 / 0.921, 0.895 / 0.915, 0.870 / 0.890, 0.956 / 0.856, 0.913 / 0.953: the real
    panel's F1 lower, four times the prediction); ``grid`` (1, 1) (0.840 / 0.910, 0.851 /
    0.905, 0.839 / 0.879, 0.943 / 0.851; training 364 s against 142 s); training on all 8
    train sections with the thresholds of the one it used to hold out (0.872 / 0.919, 0.882
    / 0.916, 0.858 / 0.891, 0.966 / 0.856, 0.915 / 0.953); half the epochs on the U-Net's
    pretraining sections (each at its own fibre diameter) and half on the train split at
    half the learning rate (0.874 / 0.916, 0.877 / 0.910, 0.858 / 0.883, 0.959 / 0.854,
    0.901 / 0.940); ``prob_thresh`` 0.35 instead of the optimised 0.49 (no fibre shares an
    object on any set, but the extra polygons divide fibres, 42 -> 128 objects inside one
    fibre on the tuning sets: 0.844 / 0.913, 0.859 / 0.909, 0.840 / 0.887, 0.949 / 0.848,
    0.929 / 0.943) or 0.6 (0.872 / 0.919, 0.886 / 0.915, 0.863 / 0.886, 0.962 / 0.857, 0.895
    / 0.953).
    A later session (the models of a fresh ``make report`` of 7fddf77 on a faster machine,
    same sets; F1@0.5 / mean IoU 0.879 / 0.921, 0.886 / 0.917, 0.871 / 0.883, 0.964 /
    0.855, 0.919 / 0.956; validation split 0.922 / 0.922) found the mean IoU deficit spread
    over fibres matched at 0.75-0.95 (1-2 px of outline), not in a few bad ones, and on the
    hard set the U-Net's outlines 0.021 better (0.904). Bringing the labels back to the
    image by a bilinear vote (``Segmenter.predict``, every method) gained 0.002-0.004
    everywhere (0.924, 0.919, 0.885, 0.855, 0.960; validation 0.924) and was kept. Tried
    without a gain (mean IoU, the same order): a growth threshold halfway between the
    object's median mass and its surroundings' (the 0.1 / 0.25 / 0.5 quantile of the mass
    within reach outside any object: 0.904 / 0.889 / 0.856, 0.906 / 0.892 / 0.863, 0.863 /
    0.842 / 0.810, real left 0.854 / 0.846 / 0.830), or a fifth of the way (quantile 0.25:
    0.913, 0.915, 0.872); the mass smoothed before the growth (sigma 0.7 / 1 px: 0.912 /
    0.905, 0.911 / 0.905, 0.882 / 0.880); growth reach scaled down with the object's size
    (to half for objects of half the fibre diameter or less: 0.912, 0.914, 0.874, real left
    0.856). Retrained (with the vote unless said; training seeds 1 and 2 of the default
    gave 0.917 / 0.918, 0.910 / 0.918, 0.878 / 0.877, 0.859 / 0.862, 0.947 / 0.957 without
    it, so differences under about 0.005 are noise): 84 epochs instead of 56 (without the
    vote: 0.920, 0.912, 0.879, 0.857, 0.952), distance-loss weight 2 (0.923, 0.915, 0.876,
    0.854, 0.956), ``net_diameter`` 28 (0.923, 0.917, 0.880, 0.855, 0.957), working at
    ``target_diameter`` 48 instead of 36 (0.924, 0.920, 0.884, 0.853, 0.960; F1 0.870,
    0.885, 0.861), and training labels brought to the network's scale by the bilinear vote
    too (0.923, 0.919, 0.883, 0.861, 0.958). Merging two objects along a membrane-free
    border of a quarter of a diameter instead of half (``refine_to_membrane``'s
    ``merge_length``, with the vote: 0.925, 0.919, 0.885, 0.855, 0.961; F1 +0.001 on the
    tuning sets) gained 0.001 at most; three quarters or a whole diameter, to keep fibres
    whose shared membrane is missing apart, lost F1 everywhere (real left 0.957, 0.938).
    Growth past the membrane's ridge taken back (:func:`~.membrane.trim_beyond_ridge`,
    ``ridge_trim``): where the gaps carry mass the growth to the mass edge runs over the
    membrane into the gap (median matched-area ratio 0.96-1.11 per section, 1.06 in the
    middle, on the 10 tuning sections whose gaps hold more than half the fibres' mass,
    against 0.96-1.04 on those below a third).
    With the models of a ``make report`` of dba0760 (F1@0.5 / mean IoU, without -> with):
    tuning sets seed 2027 0.875 / 0.923 -> 0.875 / 0.924, seed 2031 0.880 / 0.916 -> 0.878 /
    0.924; a hard set (seed 4001, every section JPEG quality 40-65, gap mass 0.06-0.12, a
    quarter or more of the membrane dropped) 0.858 / 0.891 -> 0.857 / 0.896; validation
    split 0.947 / 0.922 -> 0.947 / 0.923; real left half 0.964 / 0.858 -> 0.964 / 0.867;
    S11 / 10 0.896 / 0.952 -> 0.897 / 0.956. Tried in the same session without a gain:
    the trim with the membrane smoothed at sigma 0.7 or 1.5 px (within 0.002), with valley
    markers in the grown band as well (h-minima, h 0.02 / 0.05: identical), with more growth
    to trim (``edge_mass`` 0.4: 0.919 / 0.917 / 0.890, real left 0.865; reach a sixth of a
    diameter: 0.926 / 0.924 / 0.892, hard set F1 0.861) or less (0.6: 0.916 / 0.916 /
    0.894); growth only uphill on the membrane (0.878 / 0.882 / 0.848: objects stop at the
    membrane's noise); and a learned extent: a random forest (100 trees, depth 16) on
    ``skimage.feature.multiscale_basic_features`` of both channels (sigma 0.5-8), trained
    on the train split's working-scale pixels (GT foreground), used as the growth mask
    (0.908 / 0.913 / 0.861, real left 0.853), as a cut after the growth (0.891 / 0.890,
    real left F1 0.914) or with the mass rule (0.904 / 0.906); trained on sections without
    JPEG, it fails on compressed ones (hard set P02 0.876 -> 0.769). Retrained with 64 rays
    (with the trim; seed 0, then seed 1, F1@0.5 / mean IoU): seed 2027 0.881 / 0.923, seed
    2031 0.889 / 0.921, hard set 0.866 / 0.895, real left 0.964 / 0.865, S11 / 10 0.914 /
    0.956 (F1 up 0.006-0.017, mean IoU within 0.003); but seed 1 over-segmented everything
    (hard set 2,194 objects for 1,146 fibres, 0.634 / 0.814; real left 0.875 / 0.835), where
    32 rays with seed 1 gave 0.847 / 0.893 and 0.967 / 0.866: not adopted. A second
    coarsened hard set (seed 4002, as the hard set plus coarsening x1.5-2.5) gave StarDist
    0.828 / 0.867 and the U-Net 0.859 / 0.863: it does not reproduce P02's gap between
    them either.
    ``fill_fraction`` 0.04 instead of 0.06, with the trim and the same model (F1@0.5 / mean
    IoU, 0.06 -> 0.04): seed 2027 0.875 / 0.924 -> 0.877 / 0.924, seed 2031 0.878 / 0.924
    -> 0.880 / 0.925, hard set 0.857 / 0.896 -> 0.859 / 0.896, real left 0.964 / 0.867 ->
    0.967 / 0.866, S11 / 10 0.897 / 0.956 -> 0.907 / 0.953 (399 -> 409 objects for 488
    fibres): adopted. 0.03 found more of S11's small fibres (0.914 / 0.952, 420 objects)
    and more noise on the real panel (F1 0.959).
    Neighbours kept apart (``border_gap`` 1, :func:`~.membrane.separate_touching`): annotated
    fibres never touch (0 % of the border pixels of every synthetic section and of the real
    S11 ground truth lie next to another fibre), but StarDist's objects, grown to the
    membrane's ridge, meet there: 24 % of their border pixels on average over the 14 sections
    of a third hard set (0.5-52 %; U-Net 3 %, Cellpose 0.3 %), each half a gap too large. The
    third hard set (seed 4003) is where StarDist trailed the U-Net as on P02: fibres about
    20-27 px across (IMC; 42-53 px IF) with JPEG quality 40-65, granular mass (0.35-0.6),
    debris and gap mass; there StarDist's objects were too large (median matched-area ratio up
    to 1.11) and its fibres matched at IoU >= 0.75 were 0.02-0.05 below the U-Net's (mean IoU
    0.869 against 0.890, Cellpose 0.881). A pixel off each side of every shared border, with
    the models of the b81341c fresh clone (mean IoU, without -> with; F1@0.5 unchanged
    everywhere): third hard set mean IoU 0.869 -> 0.883, validation split 0.922 -> 0.925,
    tuning sets seed 2027 0.924 -> 0.929 and seed 2031 0.925 -> 0.928, hard set 0.896 ->
    0.898, real left half 0.866 -> 0.871, S11 / 10 0.953 -> 0.954; with training seed 1: third
    hard set 0.869 -> 0.884, seed 2027 0.921 -> 0.926, seed 2031 0.921 -> 0.925, hard set
    0.893 -> 0.895, real left 0.866 -> 0.870. In the same order (third hard set, validation,
    seed 2027, seed 2031, hard set, real left half): two pixels a side overshot (0.874, 0.925,
    0.925, 0.926, 0.890, 0.855); only the higher label's side (a 1 px gap) gained half as much
    (0.878, 0.924, 0.927, 0.927, 0.898, 0.868). Tried in the same session without the step and
    without a gain: an ensemble of training seeds 0 and 1 (probabilities and distances
    averaged before the NMS, thresholds averaged; twice the training): validation 0.918, seed
    2027 0.925, seed 2031 0.925, hard set 0.895, real left 0.866, against 0.922, 0.924, 0.925,
    0.896, 0.866 for seed 0 alone; each section predicted at its true median fibre diameter
    instead of the modality's: 0.872, 0.918, 0.925, 0.923, 0.900, so the third hard set's
    deficit is not one of scale.
    Measured afterwards on the test split (fresh-clone ``make report`` of aecdae1, the same
    byte-identical models): mean IoU 0.868 -> 0.880 (P02 0.775 -> 0.797, S11 0.919 -> 0.935),
    training seeds 1 and 2 0.865 / 0.863 -> 0.878 / 0.876.

Example
-------
>>> from nclsm_utils.segmenters import get_segmenter
>>> train = dataset.sections(split="train")                            # doctest: +SKIP
>>> get_segmenter("stardist", workdir="data").fit(train).source        # doctest: +SKIP
'trained from scratch'
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import math
import os
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np

from ..core.io import write_text
from .augment import augment_pair
from .base import (PREDICT_ONLY, BaseParams, PretrainedSegmenter, SegmenterError, register,
                   remove_small, training_pairs, use_pretrained)
from .membrane import (drop_background_objects, grow_to_mass_edge, refine_to_membrane,
                       separate_touching, split_on_faint_membrane, trim_beyond_ridge)

log = logging.getLogger(__name__)

PRETRAINED_NAME = "2D_versatile_fluo"
PRETRAINED_URL = ("https://github.com/stardist/stardist-models/releases/download/v0.1/"
                  "python_2D_versatile_fluo.zip")
MODEL_NAME = "stardist"
META_FILE = "stardist_meta.json"


@dataclasses.dataclass
class StarDistParams(BaseParams):
    """Parameters of the StarDist method (lengths in working-scale pixels, fibres ~36 px)."""

    pretrained: str = "auto"             # auto | require | never (see the module docstring)
    pretrained_model: str | None = None  # model folder; None: the Keras cache
    finetune: bool = True                # with weights present: fine-tune (True) or use as is
    n_rays: int = 32
    grid: tuple = (2, 2)
    unet_n_depth: int = 3
    unet_n_filter_base: int = 16
    unet_batch_norm: bool = False
    dist_loss_weight: float = 1.0        # weight of the distance loss (prob loss: 1)
    net_diameter: float = 24.0           # fibre diameter inside the network (predict "scale")
    patch_size: int = 96                 # training patch side at the net's scale (multiple of 16)
    batch_size: int = 4
    epochs: int = 56                     # learning-rate schedule steps (cosine decay)
    steps_per_epoch: int = 25
    learning_rate: float = 6e-3          # peak, from scratch (1e-2 diverges)
    finetune_learning_rate: float = 5e-4
    val_patches: int = 8                 # validation patches (loss only; the last weights are kept)
    #: scale jitter of the training patches (augment.scale_jitter, log-uniform): 0.5-1.5
    #: shows the net small fibres; with the U-Net's 0.75-1.33 it never detected them
    zoom: tuple = (0.5, 1.5)
    optimize_thresholds: bool = True
    # the fields from here on are used only when predicting (PREDICT_ONLY: changing one
    # re-predicts with the trained model, Segmenter.model_key)
    prob_thresh: float | None = dataclasses.field(default=None, metadata=PREDICT_ONLY)
    nms_thresh: float | None = dataclasses.field(default=None, metadata=PREDICT_ONLY)
    #: tile side for predict_instances (n_tiles)
    predict_tile: int = dataclasses.field(default=512, metadata=PREDICT_ONLY)
    #: smallest kept object (working-scale pixels)
    min_size: int = dataclasses.field(default=30, metadata=PREDICT_ONLY)
    #: how far a polygon's outline may move when it is redrawn along the membrane, as a
    #: fraction of target_diameter (membrane.refine_to_membrane; 0 = the raw polygons)
    refine_fraction: float = dataclasses.field(default=1 / 3, metadata=PREDICT_ONLY)
    #: pieces of the fibre interior without a polygon and of at least this fraction of a
    #: fibre's area (pi target_diameter^2 / 4) become objects: fibres the network missed
    #: (membrane.refine_to_membrane's fill_area; 0 = none)
    fill_fraction: float = dataclasses.field(default=0.04, metadata=PREDICT_ONLY)
    #: last step of the redrawing: grow each object over the pixels within target_diameter / 9
    #: whose mass is at least this share of its median mass (membrane.grow_to_mass_edge);
    #: 0 = grow target_diameter / 18 px to the membrane's ridge instead
    edge_mass: float = dataclasses.field(default=0.5, metadata=PREDICT_ONLY)
    #: ... and take back what grew past the membrane's ridge (membrane.trim_beyond_ridge)
    ridge_trim: bool = dataclasses.field(default=True, metadata=PREDICT_ONLY)
    #: objects holding a faint membrane line between two interiors are split when the line
    #: reaches this share of the way from interior to outline (membrane.split_on_faint_membrane;
    #: 0 = never split) ...
    split_contrast: float = dataclasses.field(default=0.3, metadata=PREDICT_ONLY)
    #: ... into parts of at least this fraction of a fibre's area (pi target_diameter^2 / 4)
    split_min_fraction: float = dataclasses.field(default=0.12, metadata=PREDICT_ONLY)
    #: objects with a mean membrane + mass signal below this are dropped
    #: (membrane.drop_background_objects; 0 = keep all)
    background_level: float = dataclasses.field(default=0.2, metadata=PREDICT_ONLY)
    #: working-scale pixels taken off each side of a border two objects share, so that
    #: neighbours do not touch, as in the annotation (membrane.separate_touching; 0 = none)
    border_gap: int = dataclasses.field(default=1, metadata=PREDICT_ONLY)

    def quick(self):
        # a few short epochs leave the object probabilities low: a lower fixed threshold
        return dataclasses.replace(self, epochs=4, steps_per_epoch=10, optimize_thresholds=False,
                                   prob_thresh=0.2 if self.prob_thresh is None else self.prob_thresh)


def keras_cache_dirs() -> list[Path]:
    """The Keras cache folders ``get_file`` uses (``$KERAS_HOME`` or ``~/.keras``, ``/tmp/.keras``)."""
    dirs = []
    if os.environ.get("KERAS_HOME"):
        dirs.append(Path(os.environ["KERAS_HOME"]))
    dirs += [Path.home() / ".keras", Path("/tmp/.keras")]
    out = []
    for d in dirs:
        if d not in out:
            out.append(d)
    return out


def _is_model_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("weights*.h5"))


def interior_channel(image: np.ndarray) -> np.ndarray:
    """Fibre interior ``max(smoothed mass - membrane, 0)``, re-normalised (1-99.8 %): ``(h, w, 1)``.

    The mass channel is smoothed (Gaussian, sigma 1.5 px) to remove its granular texture, so
    fibres of low mass (another fibre type) stay uniformly positive.
    """
    from scipy import ndimage

    mass = ndimage.gaussian_filter(image[..., 1].astype(np.float32), 1.5)
    interior = np.clip(mass - image[..., 0], 0, None).astype(np.float32)
    lo, hi = np.percentile(interior, [1.0, 99.8])
    return ((interior - lo) / max(hi - lo, 1e-6))[..., None].astype(np.float32)


@contextlib.contextmanager
def _quiet():
    """StarDist/CSBDeep print(); send that to the log (debug) instead of stdout."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        text = buffer.getvalue().strip()
        if text:
            log.debug("stardist: %s", text)


@contextlib.contextmanager
def _opencv_threads(n: int):
    """OpenCV's thread count set to ``n`` for a block (the augmentation's small resizes run
    5 % faster in one thread beside TensorFlow's training on 2 cores; results identical)."""
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(int(n))
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def _import_stardist():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        from stardist.models import Config2D, StarDist2D
    except ImportError as error:  # pragma: no cover - stardist is a declared dependency
        raise SegmenterError(f"stardist: cannot import stardist/tensorflow ({error}); install "
                             "them (see environment.yml)") from error
    return Config2D, StarDist2D


def augment(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, zoom=(0.5, 1.5)):
    """Flips, rotations, scale jitter (``zoom`` range) and intensity augmentation of a patch
    (the shared :func:`nclsm_utils.segmenters.augment.augment_pair`)."""
    return augment_pair(x, y, rng, zoom=zoom)


@register
class StarDistSegmenter(PretrainedSegmenter):
    """StarDist2D: pretrained ``2D_versatile_fluo`` when cached, fine-tuned or trained."""

    name = "stardist"
    Params = StarDistParams

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.input_mode = "membrane+mass"

    # -- pretrained weights ----------------------------------------------------------------
    def pretrained_candidates(self) -> list[Path]:
        """Folders (and zip files) where ``2D_versatile_fluo`` is looked for, in order."""
        if self.params.pretrained_model:
            return [Path(self.params.pretrained_model).expanduser()]
        out = []
        for cache in keras_cache_dirs():
            base = cache / "models" / "StarDist2D" / PRETRAINED_NAME
            out += [base / f"{PRETRAINED_NAME}_extracted", base / PRETRAINED_NAME, base,
                    base / f"{PRETRAINED_NAME}.zip"]
        return out

    def pretrained_path(self) -> Path | None:
        """The first candidate that holds the model (folder or zip), or None."""
        if self.params.pretrained == "never":
            return None
        for candidate in self.pretrained_candidates():
            if candidate.is_dir() and _is_model_folder(candidate):
                return candidate
            if candidate.is_file() and candidate.suffix == ".zip":
                return candidate
        return None

    def unavailable_message(self) -> str:
        looked = (self.pretrained_candidates()[0] if self.params.pretrained_model
                  else keras_cache_dirs()[0] / "models" / "StarDist2D" / PRETRAINED_NAME)
        return (f"stardist: pretrained {PRETRAINED_NAME} not found at {looked} (offline: nothing "
                f"is downloaded); to use it, run StarDist2D.from_pretrained('{PRETRAINED_NAME}')"
                f" on a connected machine and copy its ~/.keras/models/StarDist2D folder here, "
                f"or unzip {PRETRAINED_URL} and set Params(pretrained_model='/path/to/folder')")

    def _check_pretrained(self) -> Path | None:
        """The weights' location when they will be used; raises or logs when they cannot be."""
        path = self.pretrained_path()   # None under "never"
        used = use_pretrained(self.params.pretrained, path is not None,
                              self.unavailable_message(), log)
        return path if used else None

    def _cache_extra(self) -> dict:
        extra = super()._cache_extra()
        path = self.pretrained_path()
        extra["init"] = f"{PRETRAINED_NAME}:{path}" if path is not None else "scratch"
        return extra

    def _pretrained_folder(self, path: Path) -> Path:
        """A model folder from a folder or a downloaded zip (extracted under the workdir)."""
        if path.is_dir():
            return path
        target = self.workdir / "models" / f"_{PRETRAINED_NAME}"
        if not _is_model_folder(target):
            tmp = target.with_name(target.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                with zipfile.ZipFile(path) as archive:
                    archive.extractall(tmp)
            except (zipfile.BadZipFile, OSError) as error:
                raise SegmenterError(f"stardist: cannot extract {path}: {error}") from error
            found = [p.parent for p in tmp.rglob("config.json")]
            if not found:
                raise SegmenterError(f"stardist: {path} holds no config.json")
            shutil.rmtree(target, ignore_errors=True)
            shutil.move(str(found[0]), str(target))
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    # -- training ----------------------------------------------------------------------------
    def fit(self, train_sections, workdir=None, force: bool = False):
        if self.params.pretrained == "require" and self.pretrained_path() is None:
            self._check_pretrained()                       # raises before any folder is made
        return super().fit(train_sections, workdir=workdir, force=force)

    def _fit(self, train_sections, model_dir: Path) -> None:
        params = self.params
        Config2D, StarDist2D = _import_stardist()
        import keras

        pretrained = self._check_pretrained()
        folder = model_dir / MODEL_NAME
        shutil.rmtree(folder, ignore_errors=True)
        keras.utils.set_random_seed(params.seed)

        if pretrained is not None:
            shutil.copytree(self._pretrained_folder(pretrained), folder)
            self.input_mode = "interior"
            with _quiet():
                model = StarDist2D(None, name=MODEL_NAME, basedir=str(model_dir))
            if not params.finetune:
                self.model, self.source = model, "pretrained"
                self._write_meta(model_dir, {"input": self.input_mode, "source": self.source})
                log.info("stardist: using the pretrained %s as it is", PRETRAINED_NAME)
                return
            lr = params.finetune_learning_rate
            for key, value in {"train_patch_size": (params.patch_size, params.patch_size),
                               "train_batch_size": params.batch_size,
                               "train_learning_rate": lr, "train_tensorboard": False,
                               "train_reduce_lr": None, "train_n_val_patches": params.val_patches,
                               "use_gpu": False}.items():
                setattr(model.config, key, value)
        else:
            self.input_mode = "membrane+mass"
            lr = params.learning_rate
            config = Config2D(
                n_rays=params.n_rays, grid=tuple(params.grid), n_channel_in=2,
                unet_n_depth=params.unet_n_depth, unet_n_filter_base=params.unet_n_filter_base,
                unet_batch_norm=params.unet_batch_norm,
                train_loss_weights=(1.0, float(params.dist_loss_weight)),
                train_patch_size=(params.patch_size, params.patch_size),
                train_batch_size=params.batch_size, train_epochs=params.epochs,
                train_steps_per_epoch=params.steps_per_epoch, train_learning_rate=lr,
                train_reduce_lr=None, train_n_val_patches=params.val_patches,
                train_tensorboard=False, use_gpu=False)
            with _quiet():
                model = StarDist2D(config, name=MODEL_NAME, basedir=str(model_dir))

        # training pairs at the network's scale, resized as predict_instances(scale=...) does
        pairs = []
        for image, labels in training_pairs(train_sections, self):
            x = self._net_image(self._model_input(image))
            y = _resize_nearest(labels, x.shape[:2])
            pairs.append(_pad_pair(x, y, params.patch_size))
        train_idx, val_idx = _holdout(train_sections)
        x_train, y_train = [pairs[i][0] for i in train_idx], [pairs[i][1] for i in train_idx]
        x_val, y_val = [pairs[i][0] for i in val_idx], [pairs[i][1] for i in val_idx]
        if not any(y.max() > 0 for y in y_train):
            raise SegmenterError("stardist: no training section has any labelled fibre")

        # cosine learning-rate decay over the epochs, and the last weights are the model (no
        # choice of "best" weights by a validation loss of a few patches)
        epochs = max(1, int(params.epochs))
        rng = np.random.default_rng(params.seed)
        start, cpu = time.time(), time.process_time()
        with _quiet(), _opencv_threads(1):   # OpenCV's pool competes with TensorFlow's
            history = train_steps(
                model, x_train, y_train, x_val, y_val,
                augmenter=lambda x, y: augment(x, y, rng, params.zoom), epochs=epochs,
                steps_per_epoch=params.steps_per_epoch,
                learning_rate=lambda epoch: lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs)))
        for stale in folder.glob("weights*.h5"):
            stale.unlink()
        model.keras_model.save_weights(str(folder / "weights_best.h5"))
        train_seconds = time.time() - start
        if params.optimize_thresholds:
            with _quiet():
                model.optimize_thresholds(x_val, y_val, nms_threshs=[0.3, 0.4, 0.5],
                                          iou_threshs=[0.5, 0.7, 0.8],
                                          predict_kwargs={"show_tile_progress": False},
                                          optimize_kwargs={"tol": 1e-2, "maxiter": 40})
        thresholds = {"prob": float(model.thresholds.prob), "nms": float(model.thresholds.nms)}
        seconds, cpu_seconds = time.time() - start, time.process_time() - cpu
        self.model = model
        self.source = "fine-tuned" if pretrained is not None else "trained from scratch"
        loss, val_loss = history["loss"] or [float("nan")], history["val_loss"]
        held_out = [train_sections[i].key for i in val_idx if i not in train_idx]
        self._write_meta(model_dir, {
            "input": self.input_mode, "source": self.source, "thresholds": thresholds,
            "held_out": held_out, "train_seconds": round(train_seconds, 1),
            "seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1),
            "final_loss": float(loss[-1]), "final_val_loss": float(val_loss[-1])})
        log.info("stardist: %s in %.0f s (%.0f CPU s; training %.0f s), loss %.3f, val loss %.3f,"
                 " thresholds prob %.3f nms %.2f (held out: %s)", self.source, seconds,
                 cpu_seconds, train_seconds, float(loss[-1]), float(val_loss[-1]),
                 thresholds["prob"], thresholds["nms"], ", ".join(held_out) or "none")

    def _write_meta(self, model_dir: Path, meta: dict) -> None:
        write_text(model_dir / META_FILE, json.dumps(meta, indent=2))

    def _load(self, model_dir: Path) -> None:
        _, StarDist2D = _import_stardist()
        meta_path = model_dir / META_FILE
        folder = model_dir / MODEL_NAME
        if not meta_path.is_file() or not _is_model_folder(folder):
            raise SegmenterError(f"stardist: {model_dir} has no complete model ({META_FILE}, "
                                 f"{MODEL_NAME}/config.json, weights); delete it to retrain")
        meta = json.loads(meta_path.read_text())
        self.input_mode = meta.get("input", "membrane+mass")
        try:
            with _quiet():
                self.model = StarDist2D(None, name=MODEL_NAME, basedir=str(model_dir))
        except Exception as error:
            raise SegmenterError(f"stardist: cannot load the model in {folder}: {error}; delete "
                                 f"{model_dir} to retrain") from error

    # -- prediction --------------------------------------------------------------------------
    @property
    def net_scale(self) -> float:
        """Factor from the working scale to the network's (``net_diameter / target_diameter``)."""
        return float(self.params.net_diameter) / float(self.params.target_diameter)

    def _net_image(self, image: np.ndarray) -> np.ndarray:
        """Resize as ``predict_instances(scale=...)`` does (``ndimage.zoom``, linear)."""
        from scipy import ndimage

        f = self.net_scale
        if abs(f - 1) < 1e-6:
            return image
        return ndimage.zoom(image, (f, f, 1), order=1).astype(np.float32)

    def _model_input(self, image: np.ndarray) -> np.ndarray:
        if self.input_mode == "interior":
            return interior_channel(image)
        return np.ascontiguousarray(image[..., :2], np.float32)

    def _ensure_model(self):
        if self.model is not None:
            return self.model
        path = self.pretrained_path()
        if path is None and self.params.pretrained == "require":
            self._check_pretrained()
        if path is not None:
            _, StarDist2D = _import_stardist()
            folder = self._pretrained_folder(path)
            with _quiet():
                model = StarDist2D(None, name=folder.name, basedir=str(folder.parent))
            model.basedir = None   # read-only, as from_pretrained does
            self.model, self.source, self.input_mode = model, "pretrained", "interior"
            return model
        raise SegmenterError("stardist: no model; call fit(train_sections) first (no pretrained "
                             f"{PRETRAINED_NAME} found)")

    def _predict_working(self, image: np.ndarray, modality: str) -> np.ndarray:
        model = self._ensure_model()
        params = self.params
        x = self._model_input(image)
        f = self.net_scale
        tile = max(64, int(params.predict_tile))     # at the network's scale
        n_tiles = (math.ceil(x.shape[0] * f / tile), math.ceil(x.shape[1] * f / tile), 1)
        with _quiet():
            labels, _ = model.predict_instances(
                x, axes="YXC", scale=None if abs(f - 1) < 1e-6 else (f, f, 1),
                n_tiles=n_tiles if max(n_tiles) > 1 else None, prob_thresh=params.prob_thresh,
                nms_thresh=params.nms_thresh, show_tile_progress=False)
        diameter = float(params.target_diameter)
        ridge = 0 if params.edge_mass > 0 else int(round(diameter / 18))
        labels = refine_to_membrane(np.asarray(labels), image, params.refine_fraction * diameter,
                                    erosion=int(round(diameter / 12)),
                                    merge_length=diameter / 2, ridge=ridge,
                                    fill_area=params.fill_fraction * params.fibre_area)
        if params.refine_fraction > 0:
            reach = int(round(diameter / 9))
            grown = grow_to_mass_edge(labels, image, params.edge_mass, reach=reach)
            labels = trim_beyond_ridge(labels, grown, image) if params.ridge_trim else grown
        labels = split_on_faint_membrane(labels, image,
                                         params.split_min_fraction * params.fibre_area,
                                         params.split_contrast)
        labels = drop_background_objects(labels, image, params.background_level)
        labels = separate_touching(labels, params.border_gap)
        return remove_small(labels, params.min_size)


def train_steps(model, x_train, y_train, x_val, y_val, augmenter, epochs: int,
                steps_per_epoch: int, learning_rate) -> dict:
    """Train a prepared-or-not ``StarDist2D`` as ``StarDist2D.train`` does, in a plain loop.

    The same batches (``StarDistData2D``: random patches, the ``augmenter``, object
    probabilities and ray distances; drawn in the same order from NumPy's global random
    state), the same compiled loss and optimiser, ``keras_model.train_on_batch`` for each
    step and ``learning_rate(epoch)`` set at each epoch's start (as Keras'
    ``LearningRateScheduler``). ``StarDist2D.train`` hands a Python generator to
    ``keras.Model.fit``, which costs as much again as the step itself on a CPU (TensorFlow
    2.21, 2 cores, 96-px patches of 4: 0.24 s per step against 0.12 s here). No checkpoints
    are written; the validation loss (``train_n_val_patches`` patches of ``x_val``) is
    computed once, at the end.

    Returns
    -------
    dict with ``loss`` (the last step's loss of each epoch) and ``val_loss`` (one value).

    Raises
    ------
    SegmenterError
        When the loss stops being finite (training diverged; lower the learning rate).
    """
    from stardist.models.model2d import StarDistData2D

    if not model._model_prepared:
        model.prepare_for_training()
    config = model.config
    data_kwargs = dict(
        n_rays=config.n_rays, patch_size=config.train_patch_size, grid=config.grid,
        shape_completion=config.train_shape_completion, b=config.train_completion_crop,
        use_gpu=config.use_gpu, foreground_prob=config.train_foreground_only,
        n_classes=config.n_classes, sample_ind_cache=config.train_sample_cache)
    n_val = config.train_n_val_patches or len(x_val)
    val_inputs, val_targets = StarDistData2D(x_val, y_val, batch_size=n_val, length=1,
                                             **data_kwargs)[0]
    data = StarDistData2D(x_train, y_train, batch_size=config.train_batch_size,
                          augmenter=augmenter, length=epochs * steps_per_epoch, **data_kwargs)
    keras_model = model.keras_model
    history = {"loss": [], "val_loss": []}
    for epoch in range(epochs):
        keras_model.optimizer.learning_rate.assign(float(learning_rate(epoch)))
        for step in range(steps_per_epoch):
            out = keras_model.train_on_batch(*data[epoch * steps_per_epoch + step])
            loss = float(np.ravel(out)[0])
            if not np.isfinite(loss):
                raise SegmenterError(f"stardist: the training loss became {loss} at epoch "
                                     f"{epoch + 1}, step {step + 1}; lower learning_rate")
        history["loss"].append(loss)
    out = keras_model.evaluate(val_inputs, val_targets, batch_size=config.train_batch_size,
                               verbose=0)
    history["val_loss"].append(float(np.ravel(out)[0]))
    return history


def _holdout(sections) -> tuple[list[int], list[int]]:
    """Indices of training and validation sections: one section held out when >= 3."""
    sections = list(sections)
    if len(sections) < 3:
        every = list(range(len(sections)))
        return every, every
    by_modality: dict[str, list[int]] = {}
    for i, section in enumerate(sections):
        by_modality.setdefault(section.modality, []).append(i)
    modality = max(sorted(by_modality), key=lambda m: len(by_modality[m]))
    held = max(by_modality[modality], key=lambda i: sections[i].key)
    return [i for i in range(len(sections)) if i != held], [held]


def _resize_nearest(labels: np.ndarray, shape) -> np.ndarray:
    from .base import resize_labels

    return resize_labels(labels, tuple(shape)).astype(np.int32)


def _pad_pair(x: np.ndarray, y: np.ndarray, size: int):
    """Zero-pad an image (h, w, c) and its labels to at least ``size`` on each side."""
    pad_h, pad_w = max(0, size - y.shape[0]), max(0, size - y.shape[1])
    if pad_h or pad_w:
        x = np.pad(x, ((0, pad_h), (0, pad_w), (0, 0)))
        y = np.pad(y, ((0, pad_h), (0, pad_w)))
    return x.astype(np.float32), y.astype(np.int32)
