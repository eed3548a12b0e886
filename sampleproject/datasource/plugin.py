"""Demo plugin: collections and fields with an in-memory schema registry.

Each instance keeps the schema in memory (the way NocoBase keeps its
collection manager), because every request needs it. A change saved on one
instance sends a sync message from inside the saving transaction; it leaves
only after commit, and every other instance reloads its registry when it
arrives. Deleting a field is a schema change, so it runs under a cluster lock
on the collection: two instances never drop fields of one collection at once.
"""

import threading

from django.db import transaction
from django.db.models.signals import post_delete, post_save

from nocoplugins import Plugin


class DataSourcePlugin(Plugin):
    def load(self):
        from .models import Collection, Field

        self._schema = None  # loaded on first use, never at start-up
        self._lock = threading.Lock()
        for model in (Collection, Field):
            post_save.connect(self._changed, sender=model,
                              dispatch_uid=f"datasource.save.{model.__name__}")
            post_delete.connect(self._changed, sender=model,
                                dispatch_uid=f"datasource.delete.{model.__name__}")

    # The in-memory registry

    def schema(self):
        """{collection: {field: type}} as this instance knows it."""
        with self._lock:
            if self._schema is None:
                self._schema = self._read_schema()
            return self._schema

    def reload(self):
        with self._lock:
            self._schema = self._read_schema()
        self.logger.info("schema reloaded instance=%s collections=%d",
                         self.app.instance_id, len(self._schema))

    def _read_schema(self):
        from .models import Collection

        return {
            c.name: {f.name: f.type for f in c.fields.all()}
            for c in Collection.objects.prefetch_related("fields")
        }

    def handle_sync_message(self, message):
        self.reload()

    def _changed(self, instance, **kwargs):
        name = getattr(instance, "name", "")
        if hasattr(instance, "collection_id"):
            name = f"{instance.collection.name}.{instance.name}"
        # Sent after commit by the sync message manager; reload here too.
        self.send_sync_message({"changed": name})
        transaction.on_commit(self.reload)

    # Schema changes

    def add_field(self, collection, name, type="string"):
        from .models import Collection, Field

        with transaction.atomic():
            coll, _ = Collection.objects.get_or_create(name=collection)
            return Field.objects.create(collection=coll, name=name, type=type)

    def delete_field(self, collection, name):
        """Drop a field under the collection's lock; True if it existed."""
        from .models import Field

        def drop():
            with transaction.atomic():
                deleted, _ = Field.objects.filter(
                    collection__name=collection, name=name
                ).delete()
            return bool(deleted)

        key = f"datasource:collection:{collection}"
        return self.app.lock_manager.run_exclusive(key, drop, ttl=30, timeout=30)
