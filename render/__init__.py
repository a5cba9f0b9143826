"""Pure renderers: typed, frozen settings in, file text out.

Nothing here imports Pulumi, so every rendered file (nginx.conf, init SQL, Redis
command, bootstrap/backup/restore/certbot scripts, cron entries) can be tested
against the real tools without an engine. The components in ``components/`` call
these functions and hash their output into ``triggers``.
"""
