// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * xdpcopy's XDP programs.
 *
 * xdpcopy_redirect: hands the worker on this RX queue (through the XSKMAP) exactly the frames it
 *   must see: TCP over IPv4 or IPv6, untagged or with one 802.1Q/802.1ad tag, whose destination
 *   port is selected in `ports` (the copier), or whose source address and port are in `sources`
 *   (IPv4) or `sources6` (IPv6) (intercept: the test servers' responses). A frame that claims to
 *   be IPv4/IPv6 TCP but whose headers are broken is redirected as well, so the worker counts it
 *   as malformed instead of it vanishing. IPv6 hop-by-hop, routing and destination options
 *   headers before TCP are skipped (at most MAX_EXT_HEADERS, as the Rust parser: wire::ipv6).
 *   Everything else — other protocols, other ports, IPv4 fragments — is passed to the kernel
 *   untouched (XDP_PASS); so are IPv6 fragments of TCP, AH and longer extension chains, which
 *   are counted (CNT_V6_UNWALKABLE: they may have been TCP to a selected port). If no socket is
 *   bound on the queue the redirect falls back to XDP_PASS too.
 *
 * xdpcopy_drop: counts and drops every frame. The benchmark uses it to measure the link's XDP
 *   limit with the same counters.
 *
 * Counters are per CPU (no atomics on the hot path); userspace sums them.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

/* Keep in sync with `bpf::Counter` in src/bpf/mod.rs. */
enum counter {
	CNT_SEEN = 0,       /* every frame the program ran on */
	CNT_REDIRECTED,     /* handed to the XSK (matching port) */
	CNT_MALFORMED,      /* handed to the XSK because its headers are broken */
	CNT_PASSED,         /* given to the kernel */
	CNT_REDIRECT_FAILED,/* bpf_redirect_map fell back to XDP_PASS (no socket on the queue) */
	CNT_DROPPED,        /* xdpcopy_drop */
	CNT_V6_UNWALKABLE,  /* IPv6 passed: a fragment of TCP, AH, or too many extension headers */
	CNT_MAX,
};

/* `ports` values: bit flags. */
#define PORT_DST 1 /* redirect TCP whose destination port is this one (the copier) */
#define PORT_SRC 2 /* redirect TCP whose source port is this one (intercept) */

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u32);
} ports SEC(".maps");

/* Exact IPv4 sources for PORT_SRC ports (intercept: the test servers' address and port). */
struct source_key {
	__be32 addr;
	__be16 port;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct source_key);
	__type(value, __u8);
} sources SEC(".maps");

/* Exact IPv6 sources for PORT_SRC ports; the all-zero address matches any with that port. */
struct source6_key {
	__u8 addr[16];
	__be16 port;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct source6_key);
	__type(value, __u8);
} sources6 SEC(".maps");

/* IPv6 next-header numbers (keep in sync with wire::ipv6). */
#define NH_HOPOPTS 0
#define NH_ROUTING 43
#define NH_FRAGMENT 44
#define NH_AH 51
#define NH_DSTOPTS 60
/* Most extension headers skipped before TCP (keep in sync with wire::ipv6::MAX_EXT_HEADERS). */
#define MAX_EXT_HEADERS 4

/* The first two bytes of every skippable extension header (and of the fragment header). */
struct ext_hdr {
	__u8 nexthdr;
	__u8 hdrlen; /* in 8-octet units, not counting the first 8 */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* xdpcopy_lossy: drop probability of IPv4 TCP frames, as a threshold on a random u32. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} loss SEC(".maps");

struct vlan_hdr {
	__be16 tci;
	__be16 proto;
};

static __always_inline void count(__u32 which)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &which);
	if (c)
		*c += 1;
}

enum verdict { V_PASS, V_MINE, V_MALFORMED, V_UNWALKABLE };

/* Whether the segment's source port is a PORT_SRC one (before the exact source lookup). */
static __always_inline int src_port_selected(struct tcphdr *tcp)
{
	__u32 sport = bpf_ntohs(tcp->source);
	__u32 *flags = bpf_map_lookup_elem(&ports, &sport);
	return flags && (*flags & PORT_SRC);
}

static __always_inline int dst_port_selected(struct tcphdr *tcp)
{
	__u32 dport = bpf_ntohs(tcp->dest);
	__u32 *flags = bpf_map_lookup_elem(&ports, &dport);
	return flags && (*flags & PORT_DST);
}

static __always_inline enum verdict port_verdict(struct tcphdr *tcp, __be32 saddr)
{
	if (dst_port_selected(tcp))
		return V_MINE;
	if (src_port_selected(tcp)) {
		struct source_key key = { .addr = saddr, .port = tcp->source, .pad = 0 };
		if (bpf_map_lookup_elem(&sources, &key))
			return V_MINE;
		key.addr = 0; /* any address with this source port */
		if (bpf_map_lookup_elem(&sources, &key))
			return V_MINE;
	}
	return V_PASS;
}

static __always_inline enum verdict port_verdict6(struct tcphdr *tcp, struct ipv6hdr *ip6)
{
	if (dst_port_selected(tcp))
		return V_MINE;
	if (src_port_selected(tcp)) {
		struct source6_key key = { .port = tcp->source, .pad = 0 };
		__builtin_memcpy(key.addr, &ip6->saddr, sizeof(key.addr));
		if (bpf_map_lookup_elem(&sources6, &key))
			return V_MINE;
		__builtin_memset(key.addr, 0, sizeof(key.addr)); /* any address with this source port */
		if (bpf_map_lookup_elem(&sources6, &key))
			return V_MINE;
	}
	return V_PASS;
}

static __always_inline enum verdict classify(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return V_PASS;
	__be16 proto = eth->h_proto;
	void *l3 = eth + 1;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_hdr *vlan = l3;
		if ((void *)(vlan + 1) > end)
			return V_PASS;
		proto = vlan->proto;
		l3 = vlan + 1;
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;
		if ((void *)(ip + 1) > end)
			return V_MALFORMED; /* says IPv4, has no room for it */
		if (ip->protocol != IPPROTO_TCP)
			return V_PASS;
		if (ip->ihl < 5 || ip->version != 4)
			return V_MALFORMED;
		if (ip->frag_off & bpf_htons(0x3fff))
			return V_PASS; /* fragments: ports unknown past the first; the kernel reassembles */
		struct tcphdr *tcp = l3 + ip->ihl * 4;
		if ((void *)(tcp + 1) > end)
			return V_MALFORMED;
		if (bpf_ntohs(ip->tot_len) < ip->ihl * 4 + sizeof(*tcp))
			return V_MALFORMED; /* the TCP header lies in Ethernet padding */
		return port_verdict(tcp, ip->saddr);
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;
		if ((void *)(ip6 + 1) > end)
			return V_MALFORMED;
		__u8 nh = ip6->nexthdr;
		void *next = ip6 + 1;
		/* Skip hop-by-hop, routing and destination options headers (wire::ipv6's walk). */
#pragma unroll
		for (int i = 0; i < MAX_EXT_HEADERS; i++) {
			if (nh != NH_HOPOPTS && nh != NH_ROUTING && nh != NH_DSTOPTS)
				break;
			struct ext_hdr *h = next;
			if ((void *)(h + 1) > end)
				return V_MALFORMED; /* says it has an extension header, has no room */
			nh = h->nexthdr;
			next += (h->hdrlen + 1) * 8;
		}
		if (nh == NH_FRAGMENT) {
			struct ext_hdr *h = next;
			if ((void *)(h + 1) > end)
				return V_MALFORMED;
			/* A fragment of TCP: ports unknown past the first; the kernel reassembles. */
			return h->nexthdr == IPPROTO_TCP ? V_UNWALKABLE : V_PASS;
		}
		if (nh == NH_AH || nh == NH_HOPOPTS || nh == NH_ROUTING || nh == NH_DSTOPTS)
			return V_UNWALKABLE;
		if (nh != IPPROTO_TCP)
			return V_PASS;
		struct tcphdr *tcp = next;
		if ((void *)(tcp + 1) > end)
			return V_MALFORMED;
		if (bpf_ntohs(ip6->payload_len) < (next - (void *)(ip6 + 1)) + sizeof(*tcp))
			return V_MALFORMED; /* the TCP header lies in Ethernet padding */
		return port_verdict6(tcp, ip6);
	}
	return V_PASS;
}

/*
 * Metadata in front of every redirected frame (AF_XDP copies it into the UMEM, right before the
 * frame's data): the arrival time, so the worker can measure its own latency. Keep in sync with
 * `bpf::meta` in mod.rs.
 */
#define META_MAGIC 0x78647063u /* "xdpc" */
struct meta {
	__u32 magic;
	__u32 generation; /* 0 here; the offline feed writes its -T loop */
	__u64 arrival_ns; /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
};

static __always_inline void stamp(struct xdp_md *ctx)
{
	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(struct meta)))
		return; /* no room: the worker sees no magic and measures nothing */
	void *data = (void *)(long)ctx->data;
	struct meta *m = (void *)(long)ctx->data_meta;
	if ((void *)(m + 1) > data)
		return;
	m->magic = META_MAGIC;
	m->generation = 0;
	m->arrival_ns = bpf_ktime_get_ns();
}

SEC("xdp")
int xdpcopy_redirect(struct xdp_md *ctx)
{
	count(CNT_SEEN);
	enum verdict v = classify(ctx);
	if (v == V_PASS || v == V_UNWALKABLE) {
		if (v == V_UNWALKABLE)
			count(CNT_V6_UNWALKABLE);
		count(CNT_PASSED);
		return XDP_PASS;
	}
	count(v == V_MINE ? CNT_REDIRECTED : CNT_MALFORMED);
	stamp(ctx);
	int action = bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
	if (action == XDP_PASS)
		count(CNT_REDIRECT_FAILED);
	return action;
}

SEC("xdp")
int xdpcopy_drop(struct xdp_md *ctx)
{
	count(CNT_SEEN);
	count(CNT_DROPPED);
	return XDP_DROP;
}

/*
 * xdpcopy_lossy: a test impairment (the lab's kernel has no netem). Drops IPv4 TCP frames with
 * the probability in `loss`, passes everything else.
 */
SEC("xdp")
int xdpcopy_lossy(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	count(CNT_SEEN);
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		goto pass;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_TCP)
		goto pass;
	__u32 key = 0;
	__u32 *threshold = bpf_map_lookup_elem(&loss, &key);
	if (threshold && bpf_get_prandom_u32() < *threshold) {
		count(CNT_DROPPED);
		return XDP_DROP;
	}
pass:
	count(CNT_PASSED);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
