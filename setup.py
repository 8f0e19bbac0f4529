"""Package layout; everything else is in pyproject.toml.

The web UI's source lives in the top-level folder web/ but installs as
fleet.web, so `fleet` is the only top-level import package (`web` is another
PyPI project's name). pyproject.toml's static `packages.find` cannot rename
a folder, hence this file.

Every directory under fleet/ and web/ is discovered, so a new subpackage is
never left out; directories of templates, static files and Ansible plugins
count as (namespace) packages too, which is how setuptools wants data
directories declared. pyproject.toml's package-data says which files they
carry.
"""

from setuptools import find_namespace_packages, setup

found = find_namespace_packages(include=["fleet", "fleet.*", "web", "web.*"], exclude=["*.__pycache__"])
setup(
    package_dir={"fleet.web": "web"},
    packages=[name if name.split(".")[0] == "fleet" else f"fleet.{name}" for name in found],
)
