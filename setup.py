"""Builds the optional native extension ``alara._C``; all metadata lives in pyproject.toml."""

from setuptools import setup

setup()
