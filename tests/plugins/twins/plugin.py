from nocoplugins import Plugin


class One(Plugin):
    pass


class Two(Plugin):
    pass
