"""`python -m jupyter_colab_remote` is `jupyter colabremote`."""

from .cli import run

run()
