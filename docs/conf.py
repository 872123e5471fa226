"""Sphinx configuration of the skpatch documentation."""

import os
import sys
from datetime import date

import matplotlib

import skpatch

# Examples draw figures without a display.
matplotlib.use("Agg")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "sphinxext"))

project = "skpatch"
author = "skpatch developers"
copyright = f"{date.today().year}, {author}"
version = release = skpatch.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "auto_examples/*.ipynb", "auto_examples/*.py"]
default_role = "literal"

# -- autodoc / autosummary / numpydoc ------------------------------------------
autosummary_generate = True
# Inherited scikit-learn methods are documented, except those whose docstrings
# point to labels in scikit-learn's own documentation (unresolvable here, and
# of little use for image estimators): set_fit_request is generated for
# NoiseDiscriminator.fit's grid_shape.
EXCLUDED_MEMBERS = ["get_metadata_routing", "set_output", "set_fit_request"]
autodoc_default_options = {
    "members": True,
    "inherited-members": True,
    "exclude-members": ", ".join(EXCLUDED_MEMBERS),
}
autosummary_context = {"excluded_members": EXCLUDED_MEMBERS}
# Methods are listed by the autosummary class template, not by numpydoc.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = False

# -- sphinx-gallery ---------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"plot_",
    "abort_on_example_error": True,
    "within_subsection_order": "gallery_order.ExampleOrder",
    "doc_module": ("skpatch",),
    "backreferences_dir": "generated/backreferences",
    "min_reported_time": 0,
    "matplotlib_animations": False,
    "remove_config_comments": True,
    "show_memory": False,
}

# -- HTML ------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_static_path = ["_static"]
html_title = f"skpatch {version}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc", "sourcelink"],
}
# No left sidebar on the landing page and the example pages, whose code
# needs the width; the gallery index keeps it for navigation.
html_sidebars = {"index": [], "auto_examples/plot_*": []}
html_show_sourcelink = True
