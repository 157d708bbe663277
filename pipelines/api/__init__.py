"""The JSON API. Importing any module of it builds the one NinjaAPI first: v1.py adds the
routers of the other modules, which build on v1's helpers, so v1 must be the first one loaded."""

from pipelines.api import v1 as v1
