"""Deletions follow the user: Braze ``users.UserDeleteRequest`` becomes an Amplitude deletion.

- ``options``: the ``[deletions]`` table of the TOML file (opt-in);
- ``store``: the identity map (which Amplitude ``user_id`` values each Braze id has had)
  and the deletions, kept with the ledger (SQLite tables, or DynamoDB items);
- ``tracker``: what a run does per record (learn pairs, record delete requests, skip the
  events of deleted users);
- ``privacy``: the Amplitude User Privacy API v1 client;
- ``submit``: resolve pending deletions and submit them; the status report.
"""

from currents_export.deletions.options import DeletionOptions

__all__ = ["DeletionOptions"]
