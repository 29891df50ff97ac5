"""django-alarms: durable, precisely timed alarms for Django.

Import the public API with ``from django_alarms import alarms``; this module stays free of
anything that touches models so that settings files may import from the package.
"""

__version__ = "0.1.0"
