from ..recording import RecordingPlugin


class BetaPlugin(RecordingPlugin):
    name = "beta-plugin"
