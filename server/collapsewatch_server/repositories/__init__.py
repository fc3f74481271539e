"""Repositories: the only modules that talk SQL, one per group of tables.

Each function takes the caller's session and reads or writes rows in the caller's transaction:
it never opens, commits or rolls back one (a service does), never calls a service, and never
reaches another repository through a hook or a listener. What is read comes back as rows or as
the API schema the rows map onto one to one.
"""
