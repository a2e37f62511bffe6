/* topology: where each worker runs. topo_plan() reads the machine (or an
 * hwloc XML export) and returns a plain plan that no other module needs
 * hwloc to read. */
#ifndef ARCTIC_TOPOLOGY_H
#define ARCTIC_TOPOLOGY_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct config;

struct topo_worker {
	int pu;         /* OS index of the logical CPU the worker is pinned to */
	int core;       /* logical index of its core */
	int package;    /* logical index of its package (socket) */
	int node;       /* OS index of its NUMA node */
	int node_slot;  /* index into plan->nodes (arena slot) */
	int sqpoll_cpu; /* OS index of the CPU for its SQPOLL thread */
	char why[120];  /* one line: why this PU */
};

#define TOPO_MAX_NODES 64

struct topo_plan {
	size_t nworkers;
	struct topo_worker *w;
	size_t nnodes;              /* NUMA nodes with at least one worker */
	int nodes[TOPO_MAX_NODES];  /* their OS indexes, by node_slot */
	char source[300];           /* "this machine" or the XML path */
	char policy[200];           /* one line summary of the policy */
	int is_this_system;         /* 0 when planning from an XML file */
	void *hw;                   /* private: the hwloc topology */
};

/* Builds the plan for cfg. 0, or -1 with a one-line reason in err. */
int topo_plan(const struct config *cfg, struct topo_plan *plan, char *err,
	      size_t errlen);

/* Pins the calling thread to worker i's PU. 0 or -errno. */
int topo_pin(const struct topo_plan *plan, size_t i);

/* Binds the calling thread's memory to worker i's NUMA node (no-op on a
 * single-node machine). 0 or -errno. */
int topo_membind(const struct topo_plan *plan, size_t i);

void topo_plan_free(struct topo_plan *plan);

/* Parses a CPU/node list "0-3,8,10-11" into a bitmap of max bits.
 * 0 or -1 with a reason. */
int topo_parse_list(const char *s, unsigned char *bits, int max, char *why,
		    size_t whylen);

#ifdef __cplusplus
}
#endif

#endif
