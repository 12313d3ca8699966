"""The only network code: DNS and SMTP adapters that return core values."""
