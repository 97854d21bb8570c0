"""Build the one optional C helper (metadata lives in pyproject.toml).

``_copyrecv`` receives PostgreSQL COPY rows without the GIL. It is optional: without a C compiler
and the Python headers the package installs anyway and the source uses its pure-Python loop.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "dbmazz_connectors.sources.postgres._copyrecv",
            ["dbmazz_connectors/sources/postgres/_copyrecv.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
