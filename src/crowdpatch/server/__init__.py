"""The crowd web app: worker page, requester dashboard, JSON API, platform glue (Prolific, MTurk, local)."""
