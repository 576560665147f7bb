"""The site's pages without Quarto: navigation from ``_quarto.yml``, the ``.qmd`` pages as
simple HTML, the executed notebooks through nbconvert for readers (parameter cells left out,
code folded), and a check that every local link and image of a built site resolves.

:func:`nclsm_utils.report.site.build_site` calls :func:`render_fallback` when no ``quarto``
binary is on PATH; :func:`broken_links` checks either engine's output.
"""
from __future__ import annotations

import glob
import html
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- navigation
def nav_items(config: dict) -> list[dict]:
    """The navbar of ``_quarto.yml`` as ``[{"text", "href"} or {"text", "menu": [...]}]``."""
    navbar = (config.get("website") or {}).get("navbar") or {}
    items = []
    for side in ("left", "right"):
        for item in navbar.get(side) or []:
            if isinstance(item, str):
                item = {"href": item}
            entry = {"text": item.get("text") or Path(item.get("href", "")).stem}
            if item.get("menu"):
                entry["menu"] = [{"text": (m.get("text") if isinstance(m, dict) else None)
                                  or Path(m if isinstance(m, str) else m.get("href", "")).stem,
                                  "href": m if isinstance(m, str) else m.get("href", "")}
                                 for m in item["menu"]]
            else:
                entry["href"] = item.get("href", "")
            items.append(entry)
    return items


def _nav_hrefs(items) -> list[str]:
    out = []
    for item in items:
        if "menu" in item:
            out.extend(m["href"] for m in item["menu"] if m.get("href"))
        elif item.get("href"):
            out.append(item["href"])
    return out


def output_name(source: str) -> str:
    """Site path of a source page: ``site/methods.qmd`` -> ``site/methods.html``."""
    stem, ext = os.path.splitext(source)
    return stem + ".html" if ext.lower() in (".qmd", ".ipynb", ".md") else source


# ---------------------------------------------------------------------------- fallback
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;
color:#212529;background:#fff;line-height:1.5}
nav.nclsm-nav{background:#2c3e50;padding:0 1rem;display:flex;flex-wrap:wrap;align-items:center;
position:sticky;top:0;z-index:1000;font-size:15px}
nav.nclsm-nav a.brand{color:#fff;font-weight:600;margin-right:1.5rem;padding:.8rem 0;
text-decoration:none}
nav.nclsm-nav .item{position:relative}
nav.nclsm-nav .item>a,nav.nclsm-nav .item>span{display:block;color:#dfe6ee;padding:.8rem .7rem;
text-decoration:none;cursor:pointer}
nav.nclsm-nav .item>a:hover,nav.nclsm-nav .item>span:hover,nav.nclsm-nav a.active{color:#fff;
background:#1a252f}
nav.nclsm-nav .menu{display:none;position:absolute;background:#fff;min-width:16rem;
box-shadow:0 4px 12px rgba(0,0,0,.2);border-radius:4px;padding:.3rem 0}
nav.nclsm-nav .item:hover .menu{display:block}
nav.nclsm-nav .menu a{display:block;color:#212529;padding:.35rem 1rem;text-decoration:none}
nav.nclsm-nav .menu a:hover{background:#eef2f6}
main.nclsm-page{max-width:1240px;margin:0 auto;padding:1.5rem 1.5rem 3rem}
main.nclsm-page h1.title{margin-bottom:.2rem}
main.nclsm-page p.subtitle{color:#6c757d;font-size:1.15rem;margin-top:0}
main.nclsm-page table{border-collapse:collapse;margin:1rem 0;font-size:13px;display:block;
overflow-x:auto}
main.nclsm-page th,main.nclsm-page td{border-bottom:1px solid #dee2e6;padding:.3rem .45rem;
text-align:right;white-space:nowrap}
main.nclsm-page th{background:#f1f3f5;border-bottom:2px solid #adb5bd}
main.nclsm-page td:first-child,main.nclsm-page th:first-child{text-align:left;font-weight:600}
main.nclsm-page pre{background:#f6f8fa;padding:.8rem 1rem;border-radius:4px;overflow-x:auto}
main.nclsm-page code{font-size:90%}
main.nclsm-page dt{font-weight:600;margin-top:.6rem}
main.nclsm-page dd{margin-left:1.5rem}
details.nclsm-code>summary{color:#6c757d;font-size:13px;cursor:pointer;margin:.2rem 0}
.callout{border-left:4px solid #2780e3;background:#f3f8fd;padding:.5rem 1rem;margin:1rem 0}
footer.nclsm-footer{color:#6c757d;font-size:13px;text-align:center;padding:1rem;
border-top:1px solid #dee2e6}
"""


def _relative(target: str, page: str) -> str:
    """Link from site page ``page`` to site path ``target`` (both relative to the site root)."""
    depth = page.count("/")
    return "../" * depth + target


def nav_html(items, page: str, title: str) -> str:
    def link(href, text, css=""):
        target = output_name(href)
        active = " active" if target == page else ""
        return (f'<a class="{css}{active}" href="{html.escape(_relative(target, page))}">'
                f"{html.escape(text)}</a>")

    parts = [f'<nav class="nclsm-nav">{link("index.html", title, "brand")}']
    for item in items:
        if "menu" in item:
            entries = "".join(link(m["href"], m["text"]) for m in item["menu"] if m.get("href"))
            parts.append(f'<div class="item"><span>{html.escape(item["text"])} &#9662;</span>'
                         f'<div class="menu">{entries}</div></div>')
        else:
            parts.append(f'<div class="item">{link(item["href"], item["text"])}</div>')
    parts.append("</nav>")
    return "".join(parts)


def _front_matter(text: str) -> tuple[dict, str]:
    import yaml

    match = re.match(r"^---\s*\n(.*?)\n---\s*\n", text, re.S)
    if not match:
        return {}, text
    return yaml.safe_load(match.group(1)) or {}, text[match.end():]


def _resolve_includes(text: str, source: Path, project: Path, reports: Path, depth: int = 0) -> str:
    pattern = re.compile(r"\{\{<\s*include\s+(\S+)\s*>\}\}")

    def replace(match):
        name = match.group(1)
        if name.startswith("/"):
            rel = name.lstrip("/")
            path = reports / rel[len("reports/"):] if rel.startswith("reports/") else project / rel
        else:
            path = source.parent / name
        if not path.is_file():
            return f"*(missing include: {name})*"
        body = path.read_text()
        return _resolve_includes(body, path, project, reports, depth + 1) if depth < 5 else body

    return pattern.sub(replace, text)


def _fenced_divs(text: str) -> str:
    out = []
    for line in text.splitlines():
        opening = re.match(r"^:{3,}\s*\{([^}]*)\}\s*$", line) or re.match(r"^:{3,}\s*([\w-]+)\s*$", line)
        if opening:
            classes = " ".join(c.lstrip(".") for c in opening.group(1).split() if c.startswith(".")
                               or "=" not in c)
            out.extend(["", f'<div class="{html.escape(classes.replace("callout-", "callout callout-"))}">', ""])
        elif re.match(r"^:{3,}\s*$", line):
            out.extend(["", "</div>", ""])
        else:
            out.append(line)
    return "\n".join(out)


def _rewrite_links(body: str) -> str:
    """``href="x.qmd"`` / ``x.ipynb`` / ``x.md`` -> ``x.html`` for local links."""
    def replace(match):
        href = match.group(2)
        if re.match(r"^[a-z]+:", href) or href.startswith("#"):
            return match.group(0)
        path, _, anchor = href.partition("#")
        stem, ext = os.path.splitext(path)
        if ext.lower() in (".qmd", ".ipynb", ".md"):
            href = stem + ".html" + (f"#{anchor}" if anchor else "")
        return f'{match.group(1)}"{href}"'

    return re.sub(r'(href=)"([^"]*)"', replace, body)


def _markdown(text: str) -> str:
    import mistune

    renderer = mistune.create_markdown(escape=False, plugins=["table", "def_list", "strikethrough",
                                                              "url"])
    return renderer(text)


def _page(title: str, subtitle: str, nav: str, body: str, footer: str) -> str:
    sub = f'<p class="subtitle">{html.escape(subtitle)}</p>' if subtitle else ""
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>{nav}"
            f'<main class="nclsm-page"><h1 class="title">{html.escape(title)}</h1>{sub}{body}'
            f'</main><footer class="nclsm-footer">{html.escape(footer)}</footer></body></html>\n')


def render_qmd(source: Path, page: str, project: Path, reports: Path, nav: str, footer: str) -> str:
    meta, text = _front_matter(source.read_text())
    text = _resolve_includes(text, source, project, reports)
    body = _rewrite_links(_markdown(_fenced_divs(text)))
    return _page(str(meta.get("title", source.stem)), str(meta.get("subtitle", "")), nav, body,
                 footer)


#: Cells that never appear on the site: papermill's parameter cells (the defaults and the
#: injected values) and cells a notebook marks as not for readers.
HIDDEN_CELL_TAGS = ("parameters", "injected-parameters", "remove-cell")

#: nbconvert template of the site's notebook pages: the lab template with every code
#: cell's input folded into a closed ``<details>`` (results first; the code one click away).
NOTEBOOK_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{% block input_group -%}
<details class="nclsm-code"><summary>Show code</summary>
{{ super() }}
</details>
{%- endblock input_group %}
"""


def reader_notebook(nb):
    """A copy of notebook ``nb`` as readers see it: without the cells tagged in
    :data:`HIDDEN_CELL_TAGS` and without code cells that show nothing.

    Examples
    --------
    >>> import nbformat
    >>> nb = nbformat.v4.new_notebook()
    >>> nb.cells = [nbformat.v4.new_code_cell("data = 'x'", metadata={"tags": ["parameters"]}),
    ...             nbformat.v4.new_markdown_cell("# Title"),
    ...             nbformat.v4.new_code_cell("import numpy")]
    >>> [c.cell_type for c in reader_notebook(nb).cells]
    ['markdown']
    """
    import copy

    out = copy.deepcopy(nb)
    keep = []
    for cell in out.cells:
        tags = set((cell.get("metadata") or {}).get("tags") or ())
        if tags & set(HIDDEN_CELL_TAGS):
            continue
        if cell.cell_type == "code" and not cell.get("outputs"):
            continue
        keep.append(cell)
    out.cells = keep
    return out


def render_notebook(source: Path, page: str, nav: str, footer: str) -> str:
    """An executed notebook as HTML (stored outputs, not re-executed) with the site's nav.

    Parameter cells are left out and every code cell's input is folded (closed by
    default), so a page reads as text, tables and figures.
    """
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter

    nb = reader_notebook(nbformat.read(str(source), as_version=4))
    exporter = HTMLExporter(extra_loaders=[jinja2.DictLoader({"nclsm.html.j2": NOTEBOOK_TEMPLATE})],
                            template_file="nclsm.html.j2")
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    traitlets_log = logging.getLogger("traitlets")
    level = traitlets_log.level
    traitlets_log.setLevel(logging.ERROR)  # "Alternative text is missing on N image(s)"
    try:
        body, _ = exporter.from_notebook_node(nb)
    finally:
        traitlets_log.setLevel(level)
    style = f"<style>{CSS}</style>"
    body = body.replace("</head>", style + "</head>", 1)
    body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + nav, body, count=1)
    body = body.replace("</body>", f'<footer class="nclsm-footer">{html.escape(footer)}</footer>'
                                   "</body>", 1)
    return _rewrite_links(body)


def _render_list(config: dict, project: Path, reports: Path) -> list[tuple[str, Path]]:
    """(site path of the source, source file) of every page: the render list and the navbar."""
    patterns = list((config.get("project") or {}).get("render") or ["index.qmd"])
    patterns += _nav_hrefs(nav_items(config))
    pages: dict[str, Path] = {}
    for pattern in patterns:
        if pattern.startswith("reports/"):
            base, rel = reports, pattern[len("reports/"):]
        else:
            base, rel = project, pattern
        for match in sorted(glob.glob(str(base / rel))):
            path = Path(match)
            if path.name.startswith("_") or path.name.startswith("."):
                continue
            site_path = ("reports/" if base is reports else "") + \
                path.relative_to(base).as_posix()
            pages.setdefault(site_path, path)
    return list(pages.items())


def render_fallback(project: Path, reports: Path, out_dir: Path, config: dict) -> list[Path]:
    """Build the site without Quarto into ``out_dir`` (replaced as a whole at the end)."""
    website = config.get("website") or {}
    title = str(website.get("title", "Report"))
    footer_conf = website.get("page-footer") or {}
    footer = str(footer_conf.get("center", "") if isinstance(footer_conf, dict) else footer_conf)
    items = nav_items(config)
    staging = Path(tempfile.mkdtemp(prefix=".site-", dir=out_dir.parent))
    written = []
    try:
        for site_path, source in _render_list(config, project, reports):
            page = output_name(site_path)
            nav = nav_html(items, page, title)
            if source.suffix == ".ipynb":
                text = render_notebook(source, page, nav, footer)
            else:
                text = render_qmd(source, page, project, reports, nav, footer)
            target = staging / page
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            written.append(out_dir / page)
        resources = (config.get("project") or {}).get("resources") or []
        for pattern in resources:
            base, rel = (reports, pattern[len("reports/"):]) if pattern.startswith("reports/") \
                else (project, pattern)
            for match in glob.glob(str(base / rel)):
                prefix = "reports/" if base is reports else ""
                target = staging / (prefix + Path(match).relative_to(base).as_posix())
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(match, target)
        old = None
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
        os.replace(staging, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return written


# ---------------------------------------------------------------------------- link check
def _local_targets(page_html: str) -> list[str]:
    """The ``href`` and ``src`` values of a page that point at files of the site."""
    from html.parser import HTMLParser

    found: list[str] = []

    class Links(HTMLParser):
        def handle_starttag(self, tag, attrs):
            for name, value in attrs:
                if name in ("href", "src") and value:
                    found.append(value)

    Links().feed(page_html)
    local = []
    for value in found:
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", value) or value.startswith(("#", "//")):
            continue  # http:, https:, mailto:, data: and in-page anchors
        path = value.split("#", 1)[0].split("?", 1)[0]
        if path:
            local.append(path)
    return local


def broken_links(site_dir) -> list[tuple[str, str]]:
    """Every link or image of the built site whose target is not in the site.

    Parameters
    ----------
    site_dir : path-like
        A built site (``_site/``).

    Returns
    -------
    list of (page, target)
        Pages relative to ``site_dir``; empty when every local ``href``/``src`` resolves to a
        file (or a folder with ``index.html``) inside ``site_dir``. Links to other sites are
        not followed.
    """
    from urllib.parse import unquote

    root = Path(site_dir).resolve()
    broken = []
    for page in sorted(root.rglob("*.html")):
        for target in _local_targets(page.read_text(errors="replace")):
            resolved = (page.parent / unquote(target)).resolve()
            inside = resolved == root or root in resolved.parents
            exists = resolved.is_file() or (resolved / "index.html").is_file()
            if not (inside and exists):
                broken.append((page.relative_to(root).as_posix(), target))
    return broken
