"""The remote side: the jupyter_server extension that makes a server a Colab runtime."""
