"""Shared by the collection's modules: how a marker file reads (a collection's module_utils)."""

VERSION = "@VERSION@"


def marker_text(name):
    return "marker %s written by compat.dirc %s\n" % (name, VERSION)
