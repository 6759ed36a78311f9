# The companion's pipeline: every notebook of the book is executed by the same
# runner (nona.runner), then the site is built strictly. Profiles (profiles/*)
# set `profile` in the config: quick (CPU, embedded data), paper (GPUs, the
# paper's ten datasets), smoke (tiny, used by the tests).
import glob
import json

PROFILE = config.get("profile", "quick")
PROFILE_SETTINGS = {
    "quick": {},
    "smoke": {},
    "paper": {},
}
if PROFILE not in PROFILE_SETTINGS:
    raise ValueError(f"unknown profile {PROFILE!r}; expected one of {', '.join(PROFILE_SETTINGS)}")

# Notebooks of the book: name -> parameters per profile. Each runs from
# notebooks/<name>.md into build/executed/<name>.ipynb.
BOOK_NOTEBOOKS = {
    "statistics": {},
}


def notebook_parameters(name):
    return json.dumps(BOOK_NOTEBOOKS[name].get(PROFILE, {}), sort_keys=True)


rule all:
    input:
        "_build/html/index.html",


rule notebook:
    input:
        source="notebooks/{name}.md",
    output:
        "build/executed/{name}.ipynb",
    params:
        parameters=lambda wildcards: notebook_parameters(wildcards.name),
    log:
        "build/logs/{name}.log",
    wildcard_constraints:
        name="|".join(BOOK_NOTEBOOKS) or "no-notebook",
    shell:
        "python -m nona.runner {input.source} {output} --parameters-json '{params.parameters}' 2> {log} "
        "|| (tail -n 60 {log} >&2; exit 1)"


rule site:
    input:
        expand("build/executed/{name}.ipynb", name=BOOK_NOTEBOOKS),
        "_config.yml",
        "_toc.yml",
        "book/references.bib",
        sorted(glob.glob("book/*.md")),
    output:
        "_build/html/index.html",
    log:
        "build/logs/site.log",
    shell:
        "mkdir -p build/site && rm -rf _build/html && "
        "jupyter-book build . --path-output . --builder html -W -n --keep-going > {log} 2>&1 "
        "|| (tail -n 80 {log} >&2; exit 1)"
