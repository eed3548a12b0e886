"""Demo plugin: a token policy read from the database through the cache.

Every request that checks a token needs the policy; reading it from the
database each time is waste, keeping it in a module global is wrong in a
cluster (an edit on one instance would not reach the others). The plugin
caches it in the shared cache with ``wrap`` and drops the cached copy when
the policy changes, after the change commits.
"""

from django.db import transaction
from django.db.models.signals import post_save

from nocoplugins import Plugin

POLICY_KEY = "policy"


class AuthPolicyPlugin(Plugin):
    def load(self):
        self.cache = self.app.cache_manager.create_cache("authpolicy", ttl=300)
        from .models import TokenPolicy

        post_save.connect(self._policy_saved, sender=TokenPolicy,
                          dispatch_uid="authpolicy.saved")

    def install(self):
        from .models import TokenPolicy

        TokenPolicy.objects.get_or_create(pk=1)

    def policy(self):
        """The current policy as a dict, computed once per cluster."""
        return self.cache.wrap(POLICY_KEY, self._read_policy)

    def _read_policy(self):
        from .models import TokenPolicy

        policy = TokenPolicy.objects.filter(pk=1).first() or TokenPolicy()
        return policy.as_dict()

    def _policy_saved(self, **kwargs):
        # Drop the cached copy once the new row is visible to everyone, and
        # tell instances with a process-local store to drop theirs too.
        transaction.on_commit(lambda: self.cache.delete(POLICY_KEY))
        self.send_sync_message({"policy": "changed"})

    def handle_sync_message(self, message):
        self.cache.delete(POLICY_KEY)
