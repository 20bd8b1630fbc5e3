"""Ray-native steps: step results without pickle, a blob store for large ones, ``DurableRef``,
steps run as Ray tasks or actor methods, and raystate's Ray metrics.

Modules: ``codec`` (values as kind + bytes), ``blobs`` (the blob store), ``results`` (a result's
journal text), ``refs`` (``DurableRef``), ``remote`` (running a step on Ray, imports Ray),
``metrics`` (``ray.util.metrics`` wrappers). Only ``remote`` imports Ray at import time.
"""
