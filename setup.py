"""The one compiled part of sensord: the MQTT PUBLISH scanner (src/sensord/ingest/_scan.c).

Everything else is in pyproject.toml. The extension is optional: where it cannot be built
(no C compiler), sensord runs the same parser in pure Python, slower, and says so in
`sensord check`.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sensord.ingest._scan",
            ["src/sensord/ingest/_scan.c"],
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
        )
    ]
)
