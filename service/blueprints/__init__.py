"""The dashboard's blueprints: ``pages`` (HTML), ``api`` (JSON twins), ``auth`` (login,
write actions), ``health`` (/healthz, /metrics)."""
