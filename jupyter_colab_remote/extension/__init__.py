"""The jupyter_server extension that makes a server a Colab runtime (runs in jupyter_server)."""
