"""A collection's lookup: the collection's own version (what changes between the two commits)."""
from ansible.plugins.lookup import LookupBase

VERSION = "@VERSION@"


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        return [VERSION]
