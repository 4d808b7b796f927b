"""Ground floor: settings, errors, atomic IO and hashing, the process helper, the event vocabulary.

Imports nothing else of the project.
"""
