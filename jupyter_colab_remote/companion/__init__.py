"""The local side: the companion that connects Colab on this machine to a remote runtime."""
