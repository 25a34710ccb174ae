"""Copying protobuf messages without paying twice for what is left out."""


def copy_except(message, names):
    """A copy of `message` without the fields in `names`. (Copying it whole and then
    deleting a field would hold both: a message's memory is not given back when entries
    are deleted from it, and a net's layers are nearly all of it.)"""
    copy = type(message)()
    for fd, value in message.ListFields():
        if fd.name in names:
            continue
        set_field(copy, fd, value)
    return copy


def set_field(message, fd, value):
    """Give `message`'s field `fd` (a descriptor) `value`, as ListFields returns values:
    a repeated field extended, a message copied, a scalar set."""
    if fd.is_repeated:
        getattr(message, fd.name).extend(value)
    elif fd.message_type is not None:
        getattr(message, fd.name).CopyFrom(value)
    else:
        setattr(message, fd.name, value)
