"""The one thing pyproject.toml cannot say: the recorder's optional C fast paths.

``optional=True``: where no C compiler is found the build goes on without them and the
recorder does the same work in Python (``auditor/record/native.py``).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("auditor.record._capture_c", ["auditor/record/_capture_c.c"], optional=True),
        Extension("auditor.record._rows_c", ["auditor/record/_rows_c.c"], optional=True),
        Extension("auditor.record._targets_c", ["auditor/record/_targets_c.c"], optional=True),
    ]
)
