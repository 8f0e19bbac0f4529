"""A collection's filter: `'x' | compat.dirc.shout` is 'X!'."""


def shout(value):
    return str(value).upper() + "!"


class FilterModule:
    def filters(self):
        return {"shout": shout}
