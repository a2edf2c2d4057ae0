"""The composition root and the `quorum` command: the one package above storage, bot, handlers."""
