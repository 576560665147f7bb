"""The report: Tables I-III (:mod:`.tables`), figures (:mod:`.plots`), the notebook list and
its papermill batch (:mod:`.notebooks`), the website (:mod:`.site`), the paper reproduction
(:mod:`.reproduce`), real-image checks (:mod:`.transfer`, :mod:`.realcheck`,
:mod:`.calibration`) and the whole report (:mod:`.pipeline`: default data + batch + site)."""
