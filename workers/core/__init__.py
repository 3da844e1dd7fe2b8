"""The core both processes share: the API (app/) and the worker processes import these, and nothing here
imports a model library or anything of app/.

    settings.py      every setting, from MEDVOICE_* environment variables (pydantic-settings)
    db.py            the SQL engine and sessions;  records.py  the SQL records (users, consultations, turns,
                     citations, audit events), managed by Alembic (migrations/)
    errors.py        typed errors: each has a code and an HTTP status, and crosses the queue by name
    event_schema.py  every event a turn's stream carries;  events.py  the streams and cancel flags on Redis
    refs.py          references to files under the data dir (uploads, clips, replies), checked on the way in

They live under workers/ because `workers` may never import `app`, and both need them.
"""
