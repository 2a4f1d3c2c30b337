"""Package data the project layout keeps outside the package (pyproject.toml has the rest).

``recipes/`` (with ``recipes/grids/`` and ``recipes/claims/``) and ``tables/reference/`` stay
at the top of the repository, where readers look for them, and ship inside the wheel as
``reproduce/_resources/recipes`` and ``reproduce/_resources/reference``, so an installed ``srv``
(``pip install .``, not editable) finds them from any directory; ``reproduce/resources.py``
resolves both layouts.
"""

from setuptools import find_packages, setup

RESOURCES = {
    "reproduce._resources.recipes": "recipes",
    "reproduce._resources.recipes.grids": "recipes/grids",
    "reproduce._resources.recipes.claims": "recipes/claims",
    "reproduce._resources.reference": "tables/reference",
}

setup(
    packages=find_packages(include=["reproduce", "reproduce.*"]) + list(RESOURCES),
    package_dir=RESOURCES,
    package_data={name: ["*.toml", "*.csv", "*.md"] for name in RESOURCES},
)
