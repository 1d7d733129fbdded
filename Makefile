# The course's commands. Each one creates .venv on first use (python3 -m venv): no conda needed.
#   make course   run every lesson headless in the toy profile -> build/course/ (notebooks + HTML)
#   make test     unit tests, then every notebook under nbval (toy profile)
#   make lab      JupyterLab in the venv
#   make site     the course as a website -> build/site/index.html (offline, from the committed executed notebooks)
#   make student  student copies of the lessons (solution cells as stubs) -> build/student/ (the site links them)
#   make setup    only create / update the venv
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.course-installed
SITE_STAMP := $(VENV)/.site-installed
export COURSE_PROFILE ?= toy

.PHONY: setup course test unit-tests notebook-tests lab clean gpu-check site student

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade "pip>=24"
	$(PY) -m pip install -c constraints.txt -e ".[dev]"
	$(PY) -c "import torch, torchvision, pydensecrf.densecrf, course_lib; print('course_lib ready: torch', torch.__version__)"
	touch $(STAMP)

# The [site] extra (Sphinx, myst-nb, the theme, a local MathJax, selenium: about 35 small pure-Python wheels) only for
# make site and make test (whose tests/test_site.py builds the site and opens it in headless Chromium);
# make course and make lab do not install it.
$(SITE_STAMP): $(STAMP)
	$(PY) -m pip install -c constraints.txt -e ".[site]"
	touch $(SITE_STAMP)

site: $(SITE_STAMP) student
	$(PY) site/build.py

student: $(STAMP)
	$(PY) -m course_lib.exercises.student --out build/student

course: $(STAMP)
	$(PY) -m course_lib.lessons run --out build/course

test: unit-tests notebook-tests

unit-tests: $(STAMP) $(SITE_STAMP)
	TQDM_DISABLE=1 $(PY) -m pytest tests -q

notebook-tests: $(STAMP)
	TQDM_DISABLE=1 $(PY) -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env \
		--nbval-sanitize-with tests/nbval_sanitize.cfg notebooks

gpu-check: $(STAMP)
	$(PY) benchmarks/gpu_check.py

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks

clean:
	rm -rf build .pytest_cache
