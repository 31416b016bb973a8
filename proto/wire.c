/* wire.c — placeholder until the hand-written Pull/Push codec lands (wire.h). */
typedef int ember_wire_placeholder;
