"""The audit log: every view of a target, export, claim, login and account change, hash-chained
(docs/webapp.md, "Audit log")."""
