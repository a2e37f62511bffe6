#define _GNU_SOURCE
#include "arctic/topology.h"

#include <errno.h>
#include <hwloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arctic/config.h"
#include "arctic/util.h"

#define TOPO_MAX_CPUS 4096

int topo_parse_list(const char *s, unsigned char *bits, int max, char *why,
		    size_t whylen)
{
	memset(bits, 0, (size_t)max);
	const char *p = s;
	if (!*p)
		goto bad;
	while (*p) {
		char *end;
		if (*p < '0' || *p > '9')
			goto bad;
		long a = strtol(p, &end, 10), b = a;
		p = end;
		if (*p == '-') {
			p++;
			if (*p < '0' || *p > '9')
				goto bad;
			b = strtol(p, &end, 10);
			p = end;
		}
		if (a > b)
			goto bad;
		if (b >= max) {
			snprintf(why, whylen, "%ld is above the highest supported index %d",
				 b, max - 1);
			return -1;
		}
		for (long i = a; i <= b; i++)
			bits[i] = 1;
		if (*p == ',')
			p++;
		else if (*p)
			goto bad;
	}
	return 0;
bad:
	snprintf(why, whylen, "expected a list like 0-3,8,10-11");
	return -1;
}

static int node_of_pu(hwloc_obj_t pu)
{
	if (!pu->nodeset || hwloc_bitmap_iszero(pu->nodeset))
		return 0;
	return hwloc_bitmap_first(pu->nodeset);
}

static void list_text(hwloc_const_bitmap_t set, char *buf, size_t len)
{
	if (hwloc_bitmap_iszero(set)) {
		snprintf(buf, len, "none");
		return;
	}
	hwloc_bitmap_list_snprintf(buf, len, set);
}

struct cand {
	hwloc_obj_t pu;
	int node;
};

static int cmp_pu(const void *a, const void *b)
{
	const struct topo_worker *x = a, *y = b;
	return x->pu - y->pu;
}

static hwloc_obj_t find_nic(hwloc_topology_t t, const char *name)
{
	hwloc_obj_t o = NULL;
	while ((o = hwloc_get_next_osdev(t, o)) != NULL)
		if (o->name && strcmp(o->name, name) == 0)
			return o;
	return NULL;
}

int topo_plan(const struct config *cfg, struct topo_plan *plan, char *err,
	      size_t errlen)
{
	memset(plan, 0, sizeof(*plan));
	hwloc_topology_t t;
	char why[200];
	char buf[512];
	hwloc_bitmap_t allowed = NULL, want = NULL, used = NULL;
	struct cand *cands = NULL;

	if (hwloc_topology_init(&t) == -1) {
		snprintf(err, errlen, "hwloc_topology_init() failed: %s",
			 arc_errname(errno));
		return -1;
	}
	const char *xml = cfg->topology[0] ? cfg->topology : getenv("HWLOC_XMLFILE");
	if (xml && *xml) {
		if (hwloc_topology_set_xml(t, xml) == -1) {
			snprintf(err, errlen, "%s: cannot load '%s': %s",
				 cfg->topology[0] ? "ARCTIC_TOPOLOGY" : "HWLOC_XMLFILE",
				 xml, arc_errname(errno));
			goto fail_t;
		}
		snprintf(plan->source, sizeof(plan->source), "%s", xml);
	} else {
		snprintf(plan->source, sizeof(plan->source), "this machine");
		plan->is_this_system = 1;
	}
	if (cfg->nic[0])
		hwloc_topology_set_io_types_filter(t, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
	if (hwloc_topology_load(t) == -1) {
		snprintf(err, errlen, "%s: cannot load topology '%s': %s",
			 cfg->topology[0] ? "ARCTIC_TOPOLOGY" : "hwloc",
			 plan->source, arc_errname(errno));
		goto fail_t;
	}
	plan->hw = t;

	/* Candidate CPUs: the topology's allowed set (cgroup cpuset), and on
	 * this machine the process affinity (taskset) too. */
	allowed = hwloc_bitmap_dup(hwloc_topology_get_allowed_cpuset(t));
	want = hwloc_bitmap_alloc();
	used = hwloc_bitmap_alloc();
	if (!allowed || !want || !used)
		goto oom;
	if (plan->is_this_system) {
		hwloc_bitmap_t bound = hwloc_bitmap_alloc();
		if (bound && hwloc_get_cpubind(t, bound, HWLOC_CPUBIND_PROCESS) == 0)
			hwloc_bitmap_and(allowed, allowed, bound);
		hwloc_bitmap_free(bound);
	}
	char policy_extra[160] = "";
	if (cfg->cpus[0]) {
		static unsigned char bits[TOPO_MAX_CPUS];
		if (topo_parse_list(cfg->cpus, bits, TOPO_MAX_CPUS, why, sizeof(why))) {
			snprintf(err, errlen, "ARCTIC_CPUS: invalid value '%s' (%s)",
				 cfg->cpus, why);
			goto fail;
		}
		hwloc_const_bitmap_t all = hwloc_topology_get_complete_cpuset(t);
		hwloc_bitmap_zero(want);
		for (int i = 0; i < TOPO_MAX_CPUS; i++) {
			if (!bits[i])
				continue;
			if (!hwloc_bitmap_isset(all, (unsigned)i)) {
				list_text(all, buf, sizeof(buf));
				snprintf(err, errlen,
					 "ARCTIC_CPUS: invalid value '%s' (CPU %d does not exist; %s has %s)",
					 cfg->cpus, i, plan->source, buf);
				goto fail;
			}
			hwloc_bitmap_set(want, (unsigned)i);
		}
		hwloc_bitmap_and(allowed, allowed, want);
		if (hwloc_bitmap_iszero(allowed)) {
			snprintf(err, errlen,
				 "ARCTIC_CPUS: invalid value '%s' (none of these CPUs is allowed to this process)",
				 cfg->cpus);
			goto fail;
		}
		snprintf(policy_extra, sizeof(policy_extra), ", CPUs %s", cfg->cpus);
	}
	int nnodes_all = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_NUMANODE);
	if (cfg->numa_nodes[0]) {
		static unsigned char bits[TOPO_MAX_NODES * 16];
		int max = (int)sizeof(bits);
		if (topo_parse_list(cfg->numa_nodes, bits, max, why, sizeof(why))) {
			snprintf(err, errlen, "ARCTIC_NUMA_NODES: invalid value '%s' (%s)",
				 cfg->numa_nodes, why);
			goto fail;
		}
		hwloc_bitmap_zero(want);
		for (int i = 0; i < max; i++) {
			if (!bits[i])
				continue;
			hwloc_obj_t n = hwloc_get_numanode_obj_by_os_index(t, (unsigned)i);
			if (!n) {
				snprintf(err, errlen,
					 "ARCTIC_NUMA_NODES: invalid value '%s' (node %d does not exist; %s has %d node%s)",
					 cfg->numa_nodes, i, plan->source, nnodes_all,
					 nnodes_all == 1 ? "" : "s");
				goto fail;
			}
			hwloc_bitmap_or(want, want, n->cpuset);
		}
		hwloc_bitmap_and(allowed, allowed, want);
		if (hwloc_bitmap_iszero(allowed)) {
			snprintf(err, errlen,
				 "ARCTIC_NUMA_NODES: invalid value '%s' (no allowed CPU on these nodes)",
				 cfg->numa_nodes);
			goto fail;
		}
		size_t l = strlen(policy_extra);
		snprintf(policy_extra + l, sizeof(policy_extra) - l, ", nodes %s",
			 cfg->numa_nodes);
	}

	/* NIC locality: its nodes come first and, unless more workers are
	 * asked for than they hold, are the only ones used. */
	hwloc_bitmap_t nic_nodes = NULL;
	if (cfg->nic[0]) {
		hwloc_obj_t nic = find_nic(t, cfg->nic);
		if (!nic) {
			snprintf(err, errlen,
				 "ARCTIC_NIC: invalid value '%s' (no such network device in %s)",
				 cfg->nic, plan->source);
			goto fail;
		}
		hwloc_obj_t anc = hwloc_get_non_io_ancestor_obj(t, nic);
		nic_nodes = hwloc_bitmap_dup(anc->nodeset);
		size_t l = strlen(policy_extra);
		list_text(anc->nodeset, buf, sizeof(buf));
		snprintf(policy_extra + l, sizeof(policy_extra) - l,
			 ", NIC %s on node %s first", cfg->nic, buf);
	}

	/* One candidate per core (its first allowed PU), or every allowed PU
	 * with ARCTIC_SMT=1, in PU order. */
	int npu = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_PU);
	cands = calloc((size_t)npu + 1, sizeof(*cands));
	if (!cands)
		goto oom;
	size_t ncand = 0;
	for (int i = 0; i < npu; i++) {
		hwloc_obj_t pu = hwloc_get_obj_by_type(t, HWLOC_OBJ_PU, (unsigned)i);
		if (!hwloc_bitmap_isset(allowed, pu->os_index))
			continue;
		if (!cfg->smt) {
			hwloc_obj_t core = hwloc_get_ancestor_obj_by_type(t, HWLOC_OBJ_CORE, pu);
			if (core) {
				hwloc_bitmap_and(want, core->cpuset, allowed);
				if ((int)pu->os_index != hwloc_bitmap_first(want))
					continue;
			}
		}
		cands[ncand].pu = pu;
		cands[ncand].node = node_of_pu(pu);
		ncand++;
	}
	if (ncand == 0) {
		snprintf(err, errlen, "no CPU left to run a worker on (%s)", plan->source);
		goto fail;
	}

	/* Node-balanced order: NIC nodes first, then round-robin over nodes
	 * so any prefix (ARCTIC_WORKERS=N) is balanced. */
	int node_ids[TOPO_MAX_NODES];
	size_t nn = 0;
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < ncand; i++) {
			int nd = cands[i].node;
			bool nicn = nic_nodes && hwloc_bitmap_isset(nic_nodes, (unsigned)nd);
			if ((pass == 0) != nicn && nic_nodes)
				continue;
			if (pass == 1 && !nic_nodes)
				continue;
			bool seen = false;
			for (size_t k = 0; k < nn; k++)
				seen |= node_ids[k] == nd;
			if (!seen && nn < TOPO_MAX_NODES)
				node_ids[nn++] = nd;
		}
	}
	size_t nic_nn = 0;
	if (nic_nodes) {
		for (size_t k = 0; k < nn; k++)
			nic_nn += hwloc_bitmap_isset(nic_nodes, (unsigned)node_ids[k]);
	}
	size_t limit = ncand;
	if (nic_nodes && nic_nn) {
		size_t local = 0;
		for (size_t i = 0; i < ncand; i++)
			local += hwloc_bitmap_isset(nic_nodes, (unsigned)cands[i].node);
		limit = cfg->workers > local ? ncand : local;
	}
	if (cfg->workers > ncand) {
		snprintf(err, errlen,
			 "ARCTIC_WORKERS: invalid value '%u' (only %zu CPU%s planned: %s; ARCTIC_SMT=1 adds hardware threads)",
			 cfg->workers, ncand, ncand == 1 ? "" : "s",
			 cfg->smt ? "one per hardware thread" : "one per core");
		goto fail;
	}
	size_t nw = cfg->workers ? cfg->workers : limit;
	plan->w = calloc(nw, sizeof(*plan->w));
	if (!plan->w)
		goto oom;
	/* round-robin: NIC nodes exhausted first, then the rest */
	bool *taken = calloc(ncand, sizeof(bool));
	if (!taken)
		goto oom;
	size_t got = 0;
	for (int phase = 0; phase < 2 && got < nw; phase++) {
		size_t lo = phase == 0 ? 0 : nic_nn, hi = phase == 0 ? (nic_nn ? nic_nn : nn) : nn;
		if (phase == 1 && !nic_nn)
			break;
		bool progress = true;
		while (got < nw && progress) {
			progress = false;
			for (size_t k = lo; k < hi && got < nw; k++) {
				for (size_t i = 0; i < ncand; i++) {
					if (taken[i] || cands[i].node != node_ids[k])
						continue;
					taken[i] = true;
					struct topo_worker *tw = &plan->w[got++];
					hwloc_obj_t pu = cands[i].pu;
					hwloc_obj_t core = hwloc_get_ancestor_obj_by_type(t, HWLOC_OBJ_CORE, pu);
					hwloc_obj_t pkg = hwloc_get_ancestor_obj_by_type(t, HWLOC_OBJ_PACKAGE, pu);
					tw->pu = (int)pu->os_index;
					tw->core = core ? (int)core->logical_index : -1;
					tw->package = pkg ? (int)pkg->logical_index : 0;
					tw->node = cands[i].node;
					hwloc_bitmap_set(used, pu->os_index);
					progress = true;
					break;
				}
			}
		}
	}
	free(taken);
	plan->nworkers = got;
	qsort(plan->w, got, sizeof(*plan->w), cmp_pu);

	/* arenas: one per node in use */
	for (size_t i = 0; i < got; i++) {
		struct topo_worker *tw = &plan->w[i];
		size_t k = 0;
		while (k < plan->nnodes && plan->nodes[k] != tw->node)
			k++;
		if (k == plan->nnodes && plan->nnodes < TOPO_MAX_NODES)
			plan->nodes[plan->nnodes++] = tw->node;
		tw->node_slot = (int)k;
	}

	/* SQPOLL CPU: the worker's SMT sibling, else a free allowed CPU on its
	 * node, else its own PU (no room on this machine). */
	hwloc_bitmap_t sq_used = hwloc_bitmap_alloc();
	for (size_t i = 0; i < got; i++) {
		struct topo_worker *tw = &plan->w[i];
		hwloc_obj_t pu = hwloc_get_pu_obj_by_os_index(t, (unsigned)tw->pu);
		hwloc_obj_t core = pu ? hwloc_get_ancestor_obj_by_type(t, HWLOC_OBJ_CORE, pu) : NULL;
		hwloc_obj_t node = hwloc_get_numanode_obj_by_os_index(t, (unsigned)tw->node);
		int sq = -1;
		const char *how = "own PU: no free CPU on its node";
		if (cfg->sqpoll_shared) {
			for (size_t j = 0; j < i; j++)
				if (plan->w[j].node == tw->node) {
					sq = plan->w[j].sqpoll_cpu;
					how = "shared with its node";
					break;
				}
		}
		if (sq < 0 && core) {
			hwloc_bitmap_andnot(want, core->cpuset, used);
			hwloc_bitmap_and(want, want, hwloc_topology_get_allowed_cpuset(t));
			hwloc_bitmap_andnot(want, want, sq_used);
			if (!hwloc_bitmap_iszero(want)) {
				sq = hwloc_bitmap_first(want);
				how = "its SMT sibling";
			}
		}
		if (sq < 0 && node) {
			hwloc_bitmap_andnot(want, node->cpuset, used);
			hwloc_bitmap_and(want, want, allowed);
			hwloc_bitmap_andnot(want, want, sq_used);
			if (!hwloc_bitmap_iszero(want)) {
				sq = hwloc_bitmap_first(want);
				how = "a free CPU on its node";
			}
		}
		if (sq < 0 && node) {
			/* every free CPU already hosts an SQ thread: share one
			 * rather than compete with a worker */
			hwloc_bitmap_andnot(want, node->cpuset, used);
			hwloc_bitmap_and(want, want, allowed);
			if (!hwloc_bitmap_iszero(want)) {
				int k = (int)i % hwloc_bitmap_weight(want);
				sq = hwloc_bitmap_first(want);
				while (k-- > 0)
					sq = hwloc_bitmap_next(want, sq);
				how = "a free CPU on its node, shared";
			}
		}
		if (sq < 0)
			sq = tw->pu;
		else
			hwloc_bitmap_set(sq_used, (unsigned)sq);
		tw->sqpoll_cpu = sq;
		snprintf(tw->why, sizeof(tw->why),
			 "%s of core %d, package %d, node %d; SQPOLL on CPU %d (%s)",
			 cfg->smt ? "hardware thread" : "first allowed PU",
			 tw->core, tw->package, tw->node, sq, how);
	}
	hwloc_bitmap_free(sq_used);

	list_text(allowed, buf, sizeof(buf));
	snprintf(plan->policy, sizeof(plan->policy), "%s, %zu worker%s from allowed CPUs %s%s%s",
		 cfg->smt ? "one worker per hardware thread" : "one worker per core",
		 got, got == 1 ? "" : "s", buf, policy_extra,
		 nn > 1 ? ", balanced across nodes" : "");
	if (nic_nodes)
		hwloc_bitmap_free(nic_nodes);
	hwloc_bitmap_free(allowed);
	hwloc_bitmap_free(want);
	hwloc_bitmap_free(used);
	free(cands);
	return 0;

oom:
	snprintf(err, errlen, "out of memory while planning");
fail:
	hwloc_bitmap_free(allowed);
	hwloc_bitmap_free(want);
	hwloc_bitmap_free(used);
	free(cands);
	free(plan->w);
	plan->w = NULL;
	plan->hw = NULL;
fail_t:
	hwloc_topology_destroy(t);
	return -1;
}

int topo_pin(const struct topo_plan *plan, size_t i)
{
	if (!plan->is_this_system)
		return -EINVAL;
	hwloc_topology_t t = plan->hw;
	hwloc_bitmap_t set = hwloc_bitmap_alloc();
	if (!set)
		return -ENOMEM;
	hwloc_bitmap_only(set, (unsigned)plan->w[i].pu);
	int rc = hwloc_set_cpubind(t, set, HWLOC_CPUBIND_THREAD | HWLOC_CPUBIND_STRICT);
	if (rc == -1 && errno == EXDEV)
		rc = hwloc_set_cpubind(t, set, HWLOC_CPUBIND_THREAD);
	int e = rc == -1 ? -errno : 0;
	hwloc_bitmap_free(set);
	return e;
}

int topo_membind(const struct topo_plan *plan, size_t i)
{
	if (!plan->is_this_system || plan->nnodes < 2)
		return 0; /* one node: all memory is local already */
	hwloc_topology_t t = plan->hw;
	hwloc_bitmap_t ns = hwloc_bitmap_alloc();
	if (!ns)
		return -ENOMEM;
	hwloc_bitmap_only(ns, (unsigned)plan->w[i].node);
	int rc = hwloc_set_membind(t, ns, HWLOC_MEMBIND_BIND,
				   HWLOC_MEMBIND_THREAD | HWLOC_MEMBIND_BYNODESET);
	int e = rc == -1 ? -errno : 0;
	hwloc_bitmap_free(ns);
	return e;
}

void topo_plan_free(struct topo_plan *plan)
{
	free(plan->w);
	plan->w = NULL;
	if (plan->hw)
		hwloc_topology_destroy(plan->hw);
	plan->hw = NULL;
}
