"""Run plumbing: configs and resolvers, building objects from a config, launch checks, resume, results, and the
sinks that take pictures and scalars to every logger.

Only the apps and the callbacks import this package; the data, models and cam layers never do.
"""
