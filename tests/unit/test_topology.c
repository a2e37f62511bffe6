/* topology: the planner over every machine in topology/, its invariants
 * and each policy variable. */
#define _GNU_SOURCE
#include <dirent.h>
#include <hwloc.h>
#include <stdlib.h>

#include "arctic/config.h"
#include "arctic/topology.h"
#include "check.h"

static const char *dir;

static void cfg_for(struct config *cfg, const char *file)
{
	cfg_defaults(cfg);
	snprintf(cfg->topology, sizeof(cfg->topology), "%s/%s", dir, file);
}

static hwloc_topology_t load(const char *path)
{
	hwloc_topology_t t;
	hwloc_topology_init(&t);
	hwloc_topology_set_xml(t, path);
	hwloc_topology_load(t);
	return t;
}

/* Invariants every plan must hold. */
static void invariants(const char *name, const struct config *cfg, const struct topo_plan *p)
{
	hwloc_topology_t t = load(cfg->topology);
	hwloc_const_bitmap_t allowed = hwloc_topology_get_allowed_cpuset(t);
	CHECK(p->nworkers > 0, "%s: no workers", name);
	int per_node[TOPO_MAX_NODES] = {0};
	for (size_t i = 0; i < p->nworkers; i++) {
		const struct topo_worker *w = &p->w[i];
		for (size_t j = 0; j < i; j++)
			CHECK(p->w[j].pu != w->pu, "%s: workers %zu and %zu share PU %d", name, j, i, w->pu);
		CHECK(hwloc_bitmap_isset(allowed, (unsigned)w->pu), "%s: PU %d not allowed", name, w->pu);
		hwloc_obj_t node = hwloc_get_numanode_obj_by_os_index(t, (unsigned)w->node);
		CHECK(node && hwloc_bitmap_isset(node->cpuset, (unsigned)w->pu),
		      "%s: PU %d not inside node %d", name, w->pu, w->node);
		CHECK(node && hwloc_bitmap_isset(node->cpuset, (unsigned)w->sqpoll_cpu),
		      "%s: SQPOLL CPU %d of worker %zu off its node %d", name, w->sqpoll_cpu, i, w->node);
		CHECK(w->node_slot >= 0 && (size_t)w->node_slot < p->nnodes &&
		      p->nodes[w->node_slot] == w->node, "%s: arena slot", name);
		per_node[w->node_slot]++;
		CHECK(w->why[0] != '\0', "%s: no explanation", name);
		/* SQPOLL not on another worker's PU when its node has a free CPU */
		hwloc_bitmap_t free_on_node = hwloc_bitmap_dup(node->cpuset);
		hwloc_bitmap_and(free_on_node, free_on_node, allowed);
		for (size_t j = 0; j < p->nworkers; j++)
			hwloc_bitmap_clr(free_on_node, (unsigned)p->w[j].pu);
		if (!hwloc_bitmap_iszero(free_on_node))
			for (size_t j = 0; j < p->nworkers; j++)
				CHECK(p->w[j].pu != w->sqpoll_cpu,
				      "%s: SQPOLL CPU %d of worker %zu is worker %zu's PU though its node has room",
				      name, w->sqpoll_cpu, i, j);
		hwloc_bitmap_free(free_on_node);
	}
	hwloc_topology_destroy(t);
	(void)per_node;
}

/* With a worker count that is a prefix of the plan, nodes differ by <= 1. */
static void balanced(const char *name, const struct topo_plan *p)
{
	int per[TOPO_MAX_NODES] = {0}, lo = 1 << 30, hi = 0;
	for (size_t i = 0; i < p->nworkers; i++)
		per[p->w[i].node_slot]++;
	for (size_t k = 0; k < p->nnodes; k++) {
		lo = per[k] < lo ? per[k] : lo;
		hi = per[k] > hi ? per[k] : hi;
	}
	CHECK(hi - lo <= 1, "%s: unbalanced nodes (%d..%d workers)", name, lo, hi);
}

static int count_cores(hwloc_topology_t t)
{
	int n = 0;
	hwloc_const_bitmap_t allowed = hwloc_topology_get_allowed_cpuset(t);
	hwloc_obj_t c = NULL;
	while ((c = hwloc_get_next_obj_by_type(t, HWLOC_OBJ_CORE, c)))
		n += hwloc_bitmap_intersects(c->cpuset, allowed);
	return n;
}

static void every_file(void)
{
	DIR *d = opendir(dir);
	CHECK(d != NULL, "cannot open %s", dir);
	if (!d)
		return;
	struct dirent *e;
	int files = 0;
	while ((e = readdir(d))) {
		if (!strstr(e->d_name, ".xml"))
			continue;
		files++;
		struct config cfg;
		struct topo_plan p;
		char err[600];
		cfg_for(&cfg, e->d_name);
		int rc = topo_plan(&cfg, &p, err, sizeof(err));
		CHECK(rc == 0, "%s: %s", e->d_name, err);
		if (rc)
			continue;
		hwloc_topology_t t = load(cfg.topology);
		CHECK((int)p.nworkers == count_cores(t), "%s: default plan has %zu workers, %d cores allowed",
		      e->d_name, p.nworkers, count_cores(t));
		int allowed_pus = hwloc_bitmap_weight(hwloc_topology_get_allowed_cpuset(t));
		hwloc_topology_destroy(t);
		invariants(e->d_name, &cfg, &p);
		topo_plan_free(&p);

		/* SMT=1: one worker per allowed hardware thread */
		cfg.smt = 1;
		rc = topo_plan(&cfg, &p, err, sizeof(err));
		CHECK(rc == 0 && (int)p.nworkers == allowed_pus, "%s: SMT plan %zu workers, %d PUs",
		      e->d_name, p.nworkers, allowed_pus);
		if (!rc) {
			invariants(e->d_name, &cfg, &p);
			topo_plan_free(&p);
		}
		cfg.smt = 0;

		/* every prefix ARCTIC_WORKERS=N is node-balanced */
		for (unsigned n = 1; n <= 12; n++) {
			cfg.workers = n;
			rc = topo_plan(&cfg, &p, err, sizeof(err));
			if (rc)
				break; /* fewer cores than n */
			CHECK(p.nworkers == n, "%s: WORKERS=%u gave %zu", e->d_name, n, p.nworkers);
			invariants(e->d_name, &cfg, &p);
			balanced(e->d_name, &p);
			topo_plan_free(&p);
		}
	}
	closedir(d);
	CHECK(files >= 5, "only %d topology files", files);
}

static void policies(void)
{
	struct config cfg;
	struct topo_plan p;
	char err[600];

	/* Intel 2x16 SMT: 32 workers, 16 per node, SQPOLL on the sibling */
	cfg_for(&cfg, "intel-2s-16c-smt.xml");
	CHECK(topo_plan(&cfg, &p, err, sizeof(err)) == 0, "%s", err);
	CHECK(p.nworkers == 32 && p.nnodes == 2, "intel: %zu workers %zu nodes", p.nworkers, p.nnodes);
	CHECK(p.w[0].pu == 0 && p.w[0].sqpoll_cpu == 32, "intel: worker 0 pu %d sq %d", p.w[0].pu, p.w[0].sqpoll_cpu);
	balanced("intel", &p);
	topo_plan_free(&p);

	/* ARCTIC_CPUS restricts */
	snprintf(cfg.cpus, sizeof(cfg.cpus), "0-3,16-19");
	CHECK(topo_plan(&cfg, &p, err, sizeof(err)) == 0, "%s", err);
	CHECK(p.nworkers == 8, "CPUS: %zu workers", p.nworkers);
	for (size_t i = 0; i < p.nworkers; i++)
		CHECK((p.w[i].pu >= 0 && p.w[i].pu <= 3) || (p.w[i].pu >= 16 && p.w[i].pu <= 19),
		      "CPUS: worker on %d", p.w[i].pu);
	topo_plan_free(&p);
	cfg.cpus[0] = '\0';

	/* ARCTIC_NUMA_NODES restricts */
	snprintf(cfg.numa_nodes, sizeof(cfg.numa_nodes), "1");
	CHECK(topo_plan(&cfg, &p, err, sizeof(err)) == 0, "%s", err);
	CHECK(p.nworkers == 16 && p.nnodes == 1 && p.nodes[0] == 1, "NODES=1: %zu workers", p.nworkers);
	topo_plan_free(&p);
	cfg.numa_nodes[0] = '\0';

	/* ARCTIC_WORKERS=3 on 2 nodes: 2 + 1 */
	cfg.workers = 3;
	CHECK(topo_plan(&cfg, &p, err, sizeof(err)) == 0, "%s", err);
	CHECK(p.nworkers == 3 && p.nnodes == 2, "WORKERS=3: %zu workers %zu nodes", p.nworkers, p.nnodes);
	topo_plan_free(&p);
	cfg.workers = 0;

	/* SQPOLL_SHARED: one SQ CPU per node */
	cfg.sqpoll_shared = 1;
	CHECK(topo_plan(&cfg, &p, err, sizeof(err)) == 0, "%s", err);
	for (size_t i = 1; i < p.nworkers; i++)
		if (p.w[i].node == p.w[0].node)
			CHECK(p.w[i].sqpoll_cpu == p.w[0].sqpoll_cpu, "shared SQPOLL differs");
	topo_plan_free(&p);
	cfg.sqpoll_shared = 0;

	/* NIC on node 1: workers there */
	cfg_for(&cfg, "intel-2s-nic.xml");
	snprintf(cfg.nic, sizeof(cfg.nic), "ens1f0");
	CHECK(topo_plan(&cfg, &p, err, sizeof(err)) == 0, "%s", err);
	CHECK(p.nworkers == 16, "NIC: %zu workers", p.nworkers);
	for (size_t i = 0; i < p.nworkers; i++)
		CHECK(p.w[i].node == 1, "NIC: worker %zu on node %d", i, p.w[i].node);
	topo_plan_free(&p);
	cfg.workers = 20; /* more than the NIC node holds: spill */
	CHECK(topo_plan(&cfg, &p, err, sizeof(err)) == 0, "%s", err);
	int on1 = 0;
	for (size_t i = 0; i < p.nworkers; i++)
		on1 += p.w[i].node == 1;
	CHECK(p.nworkers == 20 && on1 == 16, "NIC spill: %zu workers, %d on node 1", p.nworkers, on1);
	topo_plan_free(&p);
	cfg.workers = 0;
	snprintf(cfg.nic, sizeof(cfg.nic), "eno1");
	CHECK(topo_plan(&cfg, &p, err, sizeof(err)) == 0, "%s", err);
	CHECK(p.nworkers == 16 && p.w[0].node == 0, "NIC eno1 -> node 0");
	topo_plan_free(&p);

	/* AMD NPS4: 8 nodes, WORKERS=8 gives one per node */
	cfg_for(&cfg, "amd-epyc-2s-nps4.xml");
	cfg.workers = 8;
	CHECK(topo_plan(&cfg, &p, err, sizeof(err)) == 0, "%s", err);
	CHECK(p.nnodes == 8, "NPS4 WORKERS=8 uses %zu nodes", p.nnodes);
	topo_plan_free(&p);

	/* restricted cpuset: only allowed PUs */
	cfg_for(&cfg, "restricted-cpuset.xml");
	CHECK(topo_plan(&cfg, &p, err, sizeof(err)) == 0, "%s", err);
	CHECK(p.nworkers == 11, "restricted: %zu workers", p.nworkers);
	topo_plan_free(&p);
}

static void errors(void)
{
	struct config cfg;
	struct topo_plan p;
	char err[600];
	struct {
		const char *file, *cpus, *nodes, *nic;
		unsigned workers;
		const char *want;
	} cases[] = {
		{"intel-2s-16c-smt.xml", "99-100", "", "", 0, "ARCTIC_CPUS: invalid value '99-100' (CPU 99 does not exist"},
		{"intel-2s-16c-smt.xml", "3-1", "", "", 0, "ARCTIC_CPUS: invalid value '3-1' (expected a list"},
		{"intel-2s-16c-smt.xml", "a", "", "", 0, "ARCTIC_CPUS: invalid value 'a'"},
		{"restricted-cpuset.xml", "0-1", "", "", 0, "none of these CPUs is allowed"},
		{"intel-2s-16c-smt.xml", "", "5", "", 0, "ARCTIC_NUMA_NODES: invalid value '5' (node 5 does not exist"},
		{"intel-2s-16c-smt.xml", "", "", "eth9", 0, "ARCTIC_NIC: invalid value 'eth9' (no such network device"},
		{"intel-2s-16c-smt.xml", "", "", "", 33, "ARCTIC_WORKERS: invalid value '33' (only 32 CPUs planned"},
		{"does-not-exist.xml", "", "", "", 0, "ARCTIC_TOPOLOGY: cannot load"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cfg_for(&cfg, cases[i].file);
		snprintf(cfg.cpus, sizeof(cfg.cpus), "%s", cases[i].cpus);
		snprintf(cfg.numa_nodes, sizeof(cfg.numa_nodes), "%s", cases[i].nodes);
		snprintf(cfg.nic, sizeof(cfg.nic), "%s", cases[i].nic);
		cfg.workers = cases[i].workers;
		err[0] = '\0';
		int rc = topo_plan(&cfg, &p, err, sizeof(err));
		CHECK(rc == -1, "case %zu accepted", i);
		if (rc == 0)
			topo_plan_free(&p);
		CHECK(strstr(err, cases[i].want) != NULL, "case %zu: '%s' lacks '%s'", i, err, cases[i].want);
		CHECK(strchr(err, '\n') == NULL, "case %zu: not one line", i);
	}
	/* unreadable XML */
	FILE *f = fopen("/tmp/arctic-bad-topology.xml", "w");
	if (f) {
		fputs("<topology><object type=\"Machine\"", f);
		fclose(f);
		cfg_defaults(&cfg);
		snprintf(cfg.topology, sizeof(cfg.topology), "/tmp/arctic-bad-topology.xml");
		int rc = topo_plan(&cfg, &p, err, sizeof(err));
		CHECK(rc == -1 && strstr(err, "ARCTIC_TOPOLOGY: cannot load"), "bad xml: %s", err);
		if (rc == 0)
			topo_plan_free(&p);
		remove("/tmp/arctic-bad-topology.xml");
	}
	char why[100];
	unsigned char bits[16];
	CHECK(topo_parse_list("0-3,8,10-11", bits, 16, why, sizeof(why)) == 0 && bits[3] && bits[8] &&
	      !bits[9] && bits[11], "list parse");
	CHECK(topo_parse_list("0-16", bits, 16, why, sizeof(why)) == -1, "list range");
	CHECK(topo_parse_list("1,,2", bits, 16, why, sizeof(why)) == -1, "list empty item");
}

int main(void)
{
	dir = getenv("ARCTIC_TOPOLOGY_DIR");
	if (!dir)
		dir = "topology";
	/* the HWLOC_XMLFILE of the caller must not leak into the plans */
	unsetenv("HWLOC_XMLFILE");
	every_file();
	policies();
	errors();
	CHECK_DONE();
}
