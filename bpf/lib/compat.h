/* compat: the constants vmlinux.h lacks (it carries types, not macros). */
#ifndef KEPP_LIB_COMPAT_H
#define KEPP_LIB_COMPAT_H

#define AF_INET 2
#define AF_INET6 10
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD

/* cgroup sock_addr verdicts. */
#define SYS_REJECT 0
#define SYS_PROCEED 1

/* sockops programs must return 1. */
#define SOCKOPS_OK 1

#define KEPP_V4MAPPED_PREFIX bpf_htonl(0x0000ffff)
#endif
