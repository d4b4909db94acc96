"""Only the C accelerator is declared here; everything else is in pyproject.toml.

``optional=True``: without a C compiler vmroc still installs and samples with the
pure-Python reader (``--backend mmap``)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("vmroc.introspect._accel._vmread", ["introspect/_accel/vmread.c"],
                             extra_compile_args=["-O2", "-Wall", "-Wextra",
                                                 "-Wno-missing-field-initializers"],
                             optional=True)])
