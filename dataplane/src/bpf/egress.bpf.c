// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * xdpcopy_egress: xdpcopy-intercept --local, on the test server's own egress (tcx, or a clsact
 * direct-action filter on kernels without tcx).
 *
 * Selects IPv4 and IPv6 TCP segments whose source (address, port) is a test server in
 * `targets` / `targets6` (the unspecified address = any address of that family with that port)
 * and whose destination is not in the `pass_to` / `pass_to6` allowlist, copies their IP + TCP
 * headers (with the skb's length and GSO size) into the `headers` ring buffer, and drops them:
 * they are the test application's answers to copied sessions, which must never reach the real
 * clients. Everything else goes on untouched (TC_ACT_UNSPEC / TCX_NEXT: later programs and
 * filters still run):
 * - not TCP, IPv4 fragments (a target's segments carry DF), IPv6 with extension headers (a TCP
 *   socket's segments have none), other source ports: the application's own outbound
 *   connections (their source port is ephemeral, never a listening port), ssh, everything else
 *   on the host;
 * - the channel itself: the intercept's connections to its copiers have the channel port as
 *   source port (`config.channel_port`; userspace refuses a --target on that port too);
 * - answers to --pass-to networks (people and monitors using the test server directly).
 * If the ring buffer is full the segment is stolen all the same (counted): letting it reach a
 * real client would reset that client's real connection; for the copier it is a lost segment,
 * which the test server retransmits.
 *
 * Counters are per CPU (no atomics on the hot path); userspace sums them.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

/* Keep in sync with `bpf::egress::Counter` in src/bpf/egress.rs. */
enum counter {
	CNT_SEEN = 0,       /* every packet the program ran on */
	CNT_CAPTURED,       /* a target's segment: header queued, segment stolen */
	CNT_GSO,            /* of those, GSO super-segments (gso_segs > 1) */
	CNT_RING_FULL,      /* a target's segment stolen without a header: the ring buffer was full */
	CNT_HEADER_UNREADABLE, /* a target's segment stolen without a header: its headers could not be read */
	CNT_PASSED_ALLOWLIST, /* a target's segment to a --pass-to address: passed */
	CNT_PASSED_CHANNEL, /* from the channel port: passed */
	CNT_PASSED,         /* everything else: passed */
	CNT_MAX,
};

/* Largest IP + TCP header (60 + 60); a record copies at most this much. */
#define HDR_MAX 120

/* One ring buffer record. Keep in sync with `bpf::egress::Record`. */
struct record {
	__u32 len;      /* the L3 packet's length in this skb (all segments of a GSO skb) */
	__u16 gso_segs; /* segments of a GSO skb, 1 (or 0) otherwise */
	__u16 gso_size; /* payload bytes per segment of a GSO skb (the MSS), 0 otherwise */
	__u16 hdr_len;  /* bytes of hdr[] filled: IP header + TCP header, at most HDR_MAX */
	__u16 pad[3];
	__u8 hdr[HDR_MAX];
};

struct config {
	__be16 channel_port; /* never captured as a source port */
	__u16 l2_len;        /* 14: Ethernet (one 802.1Q/802.1ad tag followed); 0: raw IP device */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} config SEC(".maps");

/* Source ports of the targets: a quick reject before the exact lookup. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} target_ports SEC(".maps");

struct target_key {
	__be32 addr;
	__be16 port;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct target_key);
	__type(value, __u8);
} targets SEC(".maps");

struct target6_key {
	__u8 addr[16];
	__be16 port;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct target6_key);
	__type(value, __u8);
} targets6 SEC(".maps");

struct lpm_v4 {
	__u32 prefixlen;
	__be32 addr;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v4);
	__type(value, __u8);
} pass_to SEC(".maps");

struct lpm_v6 {
	__u32 prefixlen;
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v6);
	__type(value, __u8);
} pass_to6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20); /* userspace may resize before loading */
} headers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

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

/*
 * Takes the segment away as if it had been transmitted. A plain drop (TC_ACT_SHOT / TCX_DROP)
 * makes dev_queue_xmit() return NET_XMIT_DROP, and the local TCP then takes the segment as never
 * sent (it backs off and sends it again later), while the copier, which saw its header, acks
 * data the test server believes unsent: the replay falls apart. NFQUEUE in the original "stole"
 * the packet. tcx has no "stolen" verdict (unknown codes mean TCX_NEXT), but a redirect is
 * reported to the sender as NET_XMIT_SUCCESS whatever becomes of it, and a redirect to ifindex
 * 0, which no device has, frees the skb in skb_do_redirect(). The same holds for a clsact
 * filter (TC_ACT_REDIRECT).
 */
static __always_inline int steal(void)
{
	return bpf_redirect(0, 0);
}

static __always_inline int pass(__u32 why)
{
	count(why);
	return TC_ACT_UNSPEC; /* == TCX_NEXT: the next program or filter decides */
}

SEC("tc")
int xdpcopy_egress(struct __sk_buff *skb)
{
	count(CNT_SEEN);
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg)
		return pass(CNT_PASSED);
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	void *l3 = data;
	if (cfg->l2_len) {
		struct ethhdr *eth = data;
		if ((void *)(eth + 1) > end)
			return pass(CNT_PASSED);
		__be16 proto = eth->h_proto;
		l3 = eth + 1;
		if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
			struct vlan_hdr *vlan = l3;
			if ((void *)(vlan + 1) > end)
				return pass(CNT_PASSED);
			proto = vlan->proto;
			l3 = vlan + 1;
		}
		if (proto != bpf_htons(ETH_P_IP) && proto != bpf_htons(ETH_P_IPV6))
			return pass(CNT_PASSED);
	} else if (skb->protocol != bpf_htons(ETH_P_IP) && skb->protocol != bpf_htons(ETH_P_IPV6)) {
		return pass(CNT_PASSED);
	}
	/* Our own stack built these headers in the skb's linear part; a packet whose headers are not
	 * there is not a TCP segment of a local socket. */
	struct iphdr *ip = l3;
	if ((void *)(ip + 1) > end)
		return pass(CNT_PASSED);
	/* Read in each branch, right after its bounds check: a pointer the compiler recomputes
	 * after the branches join would have lost the verifier's proof. */
	__u32 ihl, doff;
	if (ip->version == 6) {
		struct ipv6hdr *ip6 = l3;
		if ((void *)(ip6 + 1) > end || ip6->nexthdr != IPPROTO_TCP)
			return pass(CNT_PASSED);
		ihl = sizeof(*ip6);
		struct tcphdr *tcp = (void *)(ip6 + 1);
		if ((void *)(tcp + 1) > end)
			return pass(CNT_PASSED);
		doff = tcp->doff * 4;
		if (tcp->source == cfg->channel_port)
			return pass(CNT_PASSED_CHANNEL);
		__u32 sport = bpf_ntohs(tcp->source);
		__u8 *selected = bpf_map_lookup_elem(&target_ports, &sport);
		if (!selected || !*selected)
			return pass(CNT_PASSED);
		struct target6_key key = { .port = tcp->source, .pad = 0 };
		__builtin_memcpy(key.addr, &ip6->saddr, sizeof(key.addr));
		if (!bpf_map_lookup_elem(&targets6, &key)) {
			__builtin_memset(key.addr, 0, sizeof(key.addr)); /* any address with this port */
			if (!bpf_map_lookup_elem(&targets6, &key))
				return pass(CNT_PASSED);
		}
		struct lpm_v6 dst = { .prefixlen = 128 };
		__builtin_memcpy(dst.addr, &ip6->daddr, sizeof(dst.addr));
		if (bpf_map_lookup_elem(&pass_to6, &dst))
			return pass(CNT_PASSED_ALLOWLIST);
	} else {
		if (ip->version != 4 || ip->protocol != IPPROTO_TCP)
			return pass(CNT_PASSED);
		if (ip->frag_off & bpf_htons(0x3fff))
			return pass(CNT_PASSED);
		ihl = ip->ihl * 4;
		if (ihl < sizeof(*ip) || ihl > 60)
			return pass(CNT_PASSED);
		struct tcphdr *tcp = l3 + ihl;
		if ((void *)(tcp + 1) > end)
			return pass(CNT_PASSED);
		doff = tcp->doff * 4;

		if (tcp->source == cfg->channel_port)
			return pass(CNT_PASSED_CHANNEL);
		__u32 sport = bpf_ntohs(tcp->source);
		__u8 *selected = bpf_map_lookup_elem(&target_ports, &sport);
		if (!selected || !*selected)
			return pass(CNT_PASSED);
		struct target_key key = { .addr = ip->saddr, .port = tcp->source, .pad = 0 };
		if (!bpf_map_lookup_elem(&targets, &key)) {
			key.addr = 0; /* any address with this port */
			if (!bpf_map_lookup_elem(&targets, &key))
				return pass(CNT_PASSED);
		}
		struct lpm_v4 dst = { .prefixlen = 32, .addr = ip->daddr };
		if (bpf_map_lookup_elem(&pass_to, &dst))
			return pass(CNT_PASSED_ALLOWLIST);
	}

	/* A target's answer to a copied session: its headers go to the intercept, the segment is
	 * stolen. */
	__u32 n = ihl + doff;
	if (doff < sizeof(struct tcphdr)) {
		count(CNT_HEADER_UNREADABLE);
		return steal();
	}
	if (n > HDR_MAX)
		n = HDR_MAX;
	struct record *r = bpf_ringbuf_reserve(&headers, sizeof(*r), 0);
	if (!r) {
		count(CNT_RING_FULL);
		return steal();
	}
	__u32 l3_off = l3 - data;
	r->len = skb->len - l3_off;
	r->gso_segs = skb->gso_segs;
	r->gso_size = skb->gso_size;
	r->hdr_len = n;
	r->pad[0] = r->pad[1] = r->pad[2] = 0;
	/* n is in [40, HDR_MAX]: the verifier knows it from the checks above. */
	if (bpf_skb_load_bytes(skb, l3_off, r->hdr, n) < 0) {
		bpf_ringbuf_discard(r, 0);
		count(CNT_HEADER_UNREADABLE);
		return steal();
	}
	bpf_ringbuf_submit(r, 0);
	count(CNT_CAPTURED);
	if (skb->gso_segs > 1)
		count(CNT_GSO);
	return steal();
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
