/* keppctl's subcommands that live in their own file. */
#ifndef KEPPCTL_H
#define KEPPCTL_H

/* keppctl fastpath [--bpffs DIR] [--json]: the pinned BPF maps. Returns the
 * exit status. */
int kctl_fastpath(int argc, char **argv);
#endif
