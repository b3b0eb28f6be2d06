"""Deletions follow the user: Braze ``users.UserDeleteRequest`` becomes an Amplitude deletion.

- ``store``: the identity map (which Amplitude ``user_id`` values each Braze id has had)
  and the deletions, kept with the ledger (SQLite tables, or DynamoDB items);
- ``tracker``: what a run does per record (learn pairs, record delete requests, skip the
  events of deleted users);
- ``privacy_api``: the Amplitude User Privacy API v1 client;
- ``submit``: resolve pending deletions and submit them; the status report.

The ``[deletions]`` options are ``currents_export.settings.deletions``.
"""
