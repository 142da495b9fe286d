/* Compressed Deep Potential (se_e2_a) energies and forces without autograd, in double precision.
 *
 * Built on the user's machine at first use by ffspace/kernels/build.py and called through ctypes by
 * ffspace/potential/native_dp.py, which turns a compressed `DeepPotential` (ffspace/models/deep_potential.py, the
 * reference) into the tables below. The derivative is the one of ffspace/potential/analytic_dp.py, per atom:
 *   1. per edge j: s(r), s'(r), r̂, the embedding table's G(s) and G'(s)          (quintic per interval)
 *   2. T = (1/n̄) Σ_j G ⊗ s(1, r̂) (M1 × 4), D = T T[:M2]ᵀ, the fitting net forward and backward: ∂E/∂D
 *   3. ∂E/∂T, and per edge ∂E/∂r_ij through G(s) and the environment row s(1, r̂)
 * Atoms are independent (one thread each); the edges' gradients are scattered to the forces in one serial pass.
 * The edge layout, edge_vector and the grouping of edges by centre repeat ace.c's on purpose: each kernel is one
 * self-contained source, and build.py names its cached library by that source's hash alone.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int32_t n_el, m1, axis;        /* elements; embedding width M1; axis M2 */
    int32_t n_layers;              /* fitting net: Linear layers */
    double cutoff, cutoff_smooth, inv_avg, table_step, scale;
    int32_t n_intervals;
    const double *table;           /* (n_el, n_intervals, 6, M1) */
    const int32_t *widths;         /* (n_layers + 1,): M1·M2, hidden..., 1 */
    const int32_t *tanh_after;     /* (n_layers,) */
    const double *weights;         /* per element and layer: W (out, in) then b (out) */
    const int64_t *offset;         /* (n_el, n_layers): where element e's layer k starts in weights */
    int32_t max_width;
} DPParams;

typedef struct {  /* as in ace.c: r_ij = positions[j] - positions[i] + shifts_ij · cell of i's structure */
    int64_t n_edges;
    const int64_t *i, *j;
    const double *positions;
    const double *shifts;
    const double *cells;
    const int64_t *graph;
} Edges;

static void edge_vector(const Edges *g, int64_t e, double *v) {
    const double *pi = g->positions + 3 * g->i[e], *pj = g->positions + 3 * g->j[e];
    for (int k = 0; k < 3; k++) v[k] = pj[k] - pi[k];
    if (g->shifts) {
        const double *sh = g->shifts + 3 * e, *cell = g->cells + 9 * g->graph[g->i[e]];
        for (int k = 0; k < 3; k++) v[k] += sh[0] * cell[k] + sh[1] * cell[3 + k] + sh[2] * cell[6 + k];
    }
}

/* one atom: its energy, and ∂E/∂r_ij of its edges (within the cutoff) into dvec */
static double atom(const DPParams *p, int64_t a, const int64_t *start, const int64_t *order, const int64_t *species,
                   const Edges *edges, double *buf, double *act, double *dvec) {
    const int M1 = p->m1, M2 = p->axis, L = p->n_layers;
    const double rc = p->cutoff, rs = p->cutoff_smooth, h = p->table_step;
    const int64_t ne = start[a + 1] - start[a];
    /* per edge: r, u[3], s, ds, G[M1], G'[M1] */
    const int stride = 6 + 2 * M1;
    double T[M1 * 4], dT[M1 * 4];
    memset(T, 0, sizeof(T));
    for (int64_t q = 0; q < ne; q++) {
        const int64_t e = order[start[a] + q];
        double *row = buf + q * stride, v[3];
        edge_vector(edges, e, v);
        const double r = sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
        row[0] = r;
        if (!(r < rc) || !(r > 0.0)) {
            row[4] = row[5] = 0.0;
            continue;  /* beyond the cutoff (a Verlet list's extra pairs): no part of T, no force */
        }
        for (int k = 0; k < 3; k++) row[1 + k] = v[k] / r;
        double u = (r - rs) / (rc - rs);
        u = u < 0.0 ? 0.0 : (u > 1.0 ? 1.0 : u);
        const double sw = u * u * u * (-6.0 * u * u + 15.0 * u - 10.0) + 1.0;
        const double dsw = -30.0 * u * u * (u - 1.0) * (u - 1.0) / (rc - rs);
        const double s = sw / r, ds = dsw / r - sw / (r * r);
        row[4] = s;
        row[5] = ds;
        int64_t k = (int64_t)floor(s / h);
        if (k < 0) k = 0;
        if (k > p->n_intervals - 1) k = p->n_intervals - 1;
        const double t = s - (double)k * h;
        const double *c = p->table + (((int64_t)species[edges->j[e]] * p->n_intervals + k) * 6) * M1;
        double *g = row + 6, *dg = row + 6 + M1;
        for (int m = 0; m < M1; m++) {
            const double c0 = c[m], c1 = c[M1 + m], c2 = c[2 * M1 + m], c3 = c[3 * M1 + m], c4 = c[4 * M1 + m],
                         c5 = c[5 * M1 + m];
            g[m] = c0 + t * (c1 + t * (c2 + t * (c3 + t * (c4 + t * c5))));
            dg[m] = c1 + t * (2.0 * c2 + t * (3.0 * c3 + t * (4.0 * c4 + t * 5.0 * c5)));
        }
        const double env[4] = {s, s * row[1], s * row[2], s * row[3]};
        for (int m = 0; m < M1; m++)
            for (int cc = 0; cc < 4; cc++) T[m * 4 + cc] += p->inv_avg * g[m] * env[cc];
    }
    /* D = T T[:M2]ᵀ into the first activation buffer, then the fitting net of this element */
    const int s_el = (int)species[a];
    double *x = act;  /* layer inputs/outputs, each max_width long: act[k] is layer k's input */
    for (int m = 0; m < M1; m++)
        for (int b = 0; b < M2; b++) {
            double d = 0.0;
            for (int cc = 0; cc < 4; cc++) d += T[m * 4 + cc] * T[b * 4 + cc];
            x[m * M2 + b] = d;
        }
    for (int k = 0; k < L; k++) {
        const int n_in = p->widths[k], n_out = p->widths[k + 1];
        const double *W = p->weights + p->offset[s_el * L + k], *bias = W + (int64_t)n_out * n_in;
        const double *in = act + (int64_t)k * p->max_width;
        double *out = act + (int64_t)(k + 1) * p->max_width;
        for (int o = 0; o < n_out; o++) {
            double z = bias[o];
            const double *w = W + (int64_t)o * n_in;
            for (int q = 0; q < n_in; q++) z += w[q] * in[q];
            out[o] = p->tanh_after[k] ? tanh(z) : z;
        }
    }
    const double energy = act[(int64_t)L * p->max_width] * p->scale;
    /* backward: grad of the output (1) to the input D, scaled */
    double *grad = act + (int64_t)(L + 1) * p->max_width, *next = grad + p->max_width;
    grad[0] = p->scale;
    for (int k = L - 1; k >= 0; k--) {
        const int n_in = p->widths[k], n_out = p->widths[k + 1];
        const double *W = p->weights + p->offset[s_el * L + k];
        const double *out = act + (int64_t)(k + 1) * p->max_width;
        if (p->tanh_after[k])
            for (int o = 0; o < n_out; o++) grad[o] *= 1.0 - out[o] * out[o];
        for (int q = 0; q < n_in; q++) next[q] = 0.0;
        for (int o = 0; o < n_out; o++) {
            const double *w = W + (int64_t)o * n_in, go = grad[o];
            for (int q = 0; q < n_in; q++) next[q] += go * w[q];
        }
        double *tmp = grad;
        grad = next;
        next = tmp;
    }
    /* grad = ∂E/∂D (M1, M2): ∂E/∂T = dD T[:M2] + (on the first M2 rows) dDᵀ T */
    for (int m = 0; m < M1; m++)
        for (int cc = 0; cc < 4; cc++) {
            double acc = 0.0;
            for (int b = 0; b < M2; b++) acc += grad[m * M2 + b] * T[b * 4 + cc];
            if (m < M2)
                for (int m2 = 0; m2 < M1; m2++) acc += grad[m2 * M2 + m] * T[m2 * 4 + cc];
            dT[m * 4 + cc] = acc * p->inv_avg;
        }
    for (int64_t q = 0; q < ne; q++) {
        const int64_t e = order[start[a] + q];
        const double *row = buf + q * stride, *g = row + 6, *dg = row + 6 + M1;
        double *out = dvec + 3 * e;
        const double r = row[0], s = row[4], ds = row[5];
        if (!(r < rc) || !(r > 0.0)) {
            out[0] = out[1] = out[2] = 0.0;
            continue;
        }
        const double ux = row[1], uy = row[2], uz = row[3];
        const double env[4] = {s, s * ux, s * uy, s * uz};
        double eg[4] = {0.0, 0.0, 0.0, 0.0}, gd = 0.0;
        for (int m = 0; m < M1; m++) {
            double gg = 0.0;
            for (int cc = 0; cc < 4; cc++) {
                gg += dT[m * 4 + cc] * env[cc];
                eg[cc] += dT[m * 4 + cc] * g[m];
            }
            gd += gg * dg[m];
        }
        const double along = eg[1] * ux + eg[2] * uy + eg[3] * uz;
        const double radial = (gd + eg[0] + along) * ds, across = s / r;
        out[0] = radial * ux + across * (eg[1] - along * ux);
        out[1] = radial * uy + across * (eg[2] - along * uy);
        out[2] = radial * uz + across * (eg[3] - along * uz);
    }
    return energy;
}

/* energies (N,) and forces (N, 3); returns 0, or 1 when out of memory */
int dp_energies_forces(const DPParams *p, int64_t n_atoms, const int64_t *species, const Edges *edges,
                       int32_t n_threads, double *energies, double *forces) {
    const int64_t n_edges = edges->n_edges;
    int64_t *start = calloc(n_atoms + 1, sizeof(int64_t)), *order = malloc(sizeof(int64_t) * (n_edges + 1));
    int64_t *fill = malloc(sizeof(int64_t) * (n_atoms + 1));
    double *dvec = calloc(3 * (n_edges + 1), sizeof(double));
    if (!start || !order || !fill || !dvec) {
        free(start); free(order); free(fill); free(dvec);
        return 1;
    }
    for (int64_t e = 0; e < n_edges; e++) start[edges->i[e] + 1]++;
    for (int64_t a = 0; a < n_atoms; a++) start[a + 1] += start[a];
    memcpy(fill, start, sizeof(int64_t) * (n_atoms + 1));
    for (int64_t e = 0; e < n_edges; e++) order[fill[edges->i[e]]++] = e;
    free(fill);
    int64_t max_edges = 1;
    for (int64_t a = 0; a < n_atoms; a++)
        if (start[a + 1] - start[a] > max_edges) max_edges = start[a + 1] - start[a];
    int failed = 0;
    if (n_threads < 1) n_threads = 1;
#pragma omp parallel num_threads(n_threads) reduction(|| : failed)
    {
        double *buf = malloc(sizeof(double) * (size_t)max_edges * (6 + 2 * p->m1));
        double *act = malloc(sizeof(double) * (size_t)(p->n_layers + 3) * p->max_width);
        if (!buf || !act) {
            failed = 1;
        } else {
#pragma omp for schedule(dynamic, 4)
            for (int64_t a = 0; a < n_atoms; a++)
                energies[a] = atom(p, a, start, order, species, edges, buf, act, dvec);
        }
        free(buf);
        free(act);
    }
    if (failed) {
        free(start); free(order); free(dvec);
        return 1;
    }
    memset(forces, 0, sizeof(double) * 3 * n_atoms);
    for (int64_t e = 0; e < n_edges; e++) {
        const double *d = dvec + 3 * e;
        double *fi = forces + 3 * edges->i[e], *fj = forces + 3 * edges->j[e];
        for (int k = 0; k < 3; k++) {
            fi[k] += d[k];
            fj[k] -= d[k];
        }
    }
    free(start); free(order); free(dvec);
    return 0;
}
