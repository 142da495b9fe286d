/* MACE-style energies and forces without autograd, in double precision.
 *
 * Built on the user's machine at first use by ffspace/kernels/build.py and called through ctypes by
 * ffspace/potential/native_mace.py, which derives every array below from a model package (weights are data, never
 * code). The mathematics is that of ffspace/models/mace.py (its forward pass is the reference); the backward pass
 * (forces = -dE/dr) is written out here by hand, layer by layer in reverse.
 *
 * Why it is fast: the radial MLP of each layer is a function of the distance alone, R_t(r) = MLP(bessel(r) fc(r)) fc(r)
 * for every channel, so it is tabulated once per model as a quintic Hermite spline (value, first and second derivative
 * at each knot, computed in float64 by the Python side and checked there against the MLP); an edge then costs a few
 * multiply-adds per channel instead of two hidden layers and their derivative. Everything else is per atom (a few
 * (K, K) products and the sparse Clebsch-Gordan couplings of the symmetric contraction) or per edge (the aggregation
 * and its adjoint), all in cache.
 *
 * Layouts: node tensors keep the channel k innermost ((D, K) for A, (P, K) for pair products...), so inner loops run
 * over channels. Edges are grouped by receiver (a counting sort) and only those within the cutoff are kept.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#define THREAD_ID omp_get_thread_num()
#else
#define THREAD_ID 0
#endif

#define MAX_D 16      /* harmonics up to l = 3 */
#define MAX_MONO 20   /* monomials of degree <= 3 */
#define READOUT_MAX 64

typedef struct {
    int32_t n_el, K, lmax, D, layers;
    int32_t vec_layers;            /* layers that update the l = 1 node features (hidden_lmax = 1: layers - 1) */
    double cutoff, inv_avg, scale; /* A; 1/n-bar; the energy scale */
    /* radial tables: per layer, knots r_min + q h (q = 0..n_knots-1), each (3, C_t): f, h f', h^2 f'' */
    double r_min, h;
    int32_t n_knots;
    const int32_t *channels;       /* (layers,) C_t = K (lmax + 1) [+ K for the vector messages] */
    const int64_t *table_offset;   /* (layers,) */
    const double *table;
    /* spherical harmonics as polynomials of the unit vector (as ffspace/kernels/ace.c) */
    int32_t max_degree, n_mono;
    const int32_t *mono_exp;       /* (n_mono, 3) */
    const double *harm;            /* (n_mono, D) */
    const int32_t *mono_lower;     /* (n_mono, 3) */
    const int32_t *l_of_m;         /* (D,) */
    /* weights, all layers stacked; matrices stored (in, out) so that out is the inner index */
    const double *embedding;       /* (n_el, K) */
    const double *up;              /* (layers, K, K) */
    const double *a_mix;           /* (layers, lmax + 1, K, K) */
    int32_t n_inv;
    const double *contraction;     /* (layers, n_el, n_inv, K) */
    const double *mix_w, *mix_b;   /* (layers, K, K), (layers, K) */
    const double *skip;            /* (layers, K, K) */
    const double *readout_w;       /* (layers - 1, K) linear readouts */
    const double *readout_b;       /* (layers - 1,) */
    int32_t ro_hidden;             /* the last readout: K -> ro_hidden (SiLU) -> 1 */
    const double *ro1_w, *ro1_b, *ro2_w; /* (K, ro_hidden), (ro_hidden,), (ro_hidden,) */
    double ro2_b;
    /* vector features (vec_layers of them) */
    int32_t n_vec;                 /* nu = 2 vector couplings */
    const double *up_vec;          /* (vec_layers, K, K) */
    int32_t msg_nz;                /* the couplings Y_d' (x) v_c -> A_d that are nonzero (Clebsch-Gordan sparsity) */
    const int32_t *msg_cd, *msg_d; /* (msg_nz,): c D + d', and d */
    const double *msg;             /* (vec_layers, msg_nz, K): their weight per channel, path weights folded in */
    const double *vec_contraction; /* (vec_layers, n_el, 1 + n_vec, K) */
    const double *vec_mix;         /* (vec_layers, K, K) */
    /* the symmetric contraction's couplings, sparse */
    int32_t n_pairs;
    const int32_t *pair_m1, *pair_m2;         /* (P,) */
    int32_t nz2;
    const int32_t *c2_p, *c2_l;               /* nu = 2: invariant 1 + l += v aa_p */
    const double *c2_v;
    int32_t n3, nz3;
    const int32_t *c3_p, *c3_q, *c3_d;        /* nu = 3: T[q][d] += v aa_p; invariant 1 + (lmax+1) + q = sum_d T a_d */
    const double *c3_v;
    int32_t nzv;
    const int32_t *cv_p, *cv_q, *cv_c;        /* vectors: vec[1 + q][c] += v aa_p */
    const double *cv_v;
} MaceParams;

typedef struct {  /* the graph: r_ij = positions[j] - positions[i] + shifts_ij . cell of i's structure */
    int64_t n_edges;
    const int64_t *i, *j;
    const double *positions;
    const double *shifts;          /* (E, 3) or NULL */
    const double *cells;           /* (G, 3, 3) rows */
    const int64_t *graph;
} Edges;

#define MONO_START(d) ((d) * ((d) + 1) * ((d) + 2) / 6)

static double silu(double x) { return x / (1.0 + exp(-x)); }
static double dsilu(double x) {
    const double s = 1.0 / (1.0 + exp(-x));
    return s * (1.0 + x * (1.0 - s));
}

/* out (n_out) = x (n_in) @ W (n_in, n_out) [+= when acc] */
static void vecmat(const double *x, const double *W, int n_in, int n_out, double *out, int acc) {
    if (!acc) memset(out, 0, sizeof(double) * n_out);
    for (int a = 0; a < n_in; a++) {
        const double xa = x[a];
        if (xa == 0.0) continue;
        const double *row = W + (int64_t)a * n_out;
#pragma omp simd
        for (int b = 0; b < n_out; b++) out[b] += xa * row[b];
    }
}

/* out (n_in) += W (n_in, n_out) @ g (n_out): the adjoint of vecmat */
static void matvec_acc(const double *W, const double *g, int n_in, int n_out, double *out) {
    for (int a = 0; a < n_in; a++) {
        const double *row = W + (int64_t)a * n_out;
        double s = 0.0;
#pragma omp simd reduction(+ : s)
        for (int b = 0; b < n_out; b++) s += row[b] * g[b];
        out[a] += s;
    }
}

/* the monomials of u up to degree max_degree */
static void monomials(const MaceParams *p, const double *u, double *mono) {
    double pw[3][4];
    for (int k = 0; k < 3; k++) {
        pw[k][0] = 1.0;
        for (int e = 1; e <= p->max_degree; e++) pw[k][e] = pw[k][e - 1] * u[k];
    }
    for (int q = 0; q < p->n_mono; q++) {
        const int32_t *e = p->mono_exp + 3 * q;
        mono[q] = pw[0][e[0]] * pw[1][e[1]] * pw[2][e[2]];
    }
}

static void harmonics(const MaceParams *p, const double *mono, double *Y) {
    const int D = p->D;
    for (int m = 0; m < D; m++) {
        const int l = p->l_of_m[m];
        double acc = 0.0;
        for (int q = MONO_START(l); q < MONO_START(l + 1); q++) acc += p->harm[q * D + m] * mono[q];
        Y[m] = acc;
    }
}

/* d/du of sum_m P_m Y_m(u) (u treated as a free vector) */
static void harmonics_gradient(const MaceParams *p, const double *mono, const double *P, double *g) {
    const int D = p->D;
    g[0] = g[1] = g[2] = 0.0;
    for (int q = 1; q < p->n_mono; q++) {
        double cq = 0.0;
        for (int m = 0; m < D; m++) cq += p->harm[q * D + m] * P[m];
        if (cq == 0.0) continue;
        const int32_t *e = p->mono_exp + 3 * q, *lower = p->mono_lower + 3 * q;
        for (int k = 0; k < 3; k++)
            if (e[k]) g[k] += e[k] * cq * mono[lower[k]];
    }
}

/* R(r) and dR/dr (C channels) from layer t's quintic Hermite table */
static void radial(const MaceParams *p, int t, double r, double *R, double *dR) {
    const int C = p->channels[t];
    double x = (r - p->r_min) / p->h;
    int q = (int)x;
    if (q > p->n_knots - 2) q = p->n_knots - 2;
    if (q < 0) q = 0;
    const double s = x - q, s2 = s * s, s3 = s2 * s, s4 = s3 * s, s5 = s4 * s, inv_h = 1.0 / p->h;
    const double b0 = 1 - 10 * s3 + 15 * s4 - 6 * s5, b1 = s - 6 * s3 + 8 * s4 - 3 * s5,
                 b2 = 0.5 * (s2 - 3 * s3 + 3 * s4 - s5), b3 = 10 * s3 - 15 * s4 + 6 * s5,
                 b4 = -4 * s3 + 7 * s4 - 3 * s5, b5 = 0.5 * (s3 - 2 * s4 + s5);
    const double d0 = (-30 * s2 + 60 * s3 - 30 * s4) * inv_h, d1 = (1 - 18 * s2 + 32 * s3 - 15 * s4) * inv_h,
                 d2 = 0.5 * (2 * s - 9 * s2 + 12 * s3 - 5 * s4) * inv_h, d3 = (30 * s2 - 60 * s3 + 30 * s4) * inv_h,
                 d4 = (-12 * s2 + 28 * s3 - 15 * s4) * inv_h, d5 = 0.5 * (3 * s2 - 8 * s3 + 5 * s4) * inv_h;
    const double *k0 = p->table + p->table_offset[t] + (int64_t)q * 3 * C, *k1 = k0 + 3 * C;
#pragma omp simd
    for (int c = 0; c < C; c++) {
        R[c] = b0 * k0[c] + b1 * k0[C + c] + b2 * k0[2 * C + c] + b3 * k1[c] + b4 * k1[C + c] + b5 * k1[2 * C + c];
        dR[c] = d0 * k0[c] + d1 * k0[C + c] + d2 * k0[2 * C + c] + d3 * k1[c] + d4 * k1[C + c] + d5 * k1[2 * C + c];
    }
}

typedef struct {  /* everything the backward pass reads */
    int64_t n, n_kept;
    int64_t *start;                /* (n + 1,) kept edges of receiver i: start[i] .. start[i+1] */
    int64_t *ej;                   /* (E,) neighbour */
    int64_t *ei;                   /* (E,) receiver */
    int64_t *by_j_start, *by_j;    /* the kept edges grouped by neighbour: by_j[by_j_start[j] ..] */
    double *r, *u, *Y, *mono;      /* (E,), (E, 3), (E, D), (E, n_mono) */
    double *R, *dR;                /* per layer (E, C_t), offsets roff[t] */
    int64_t *roff;
    double *h;                     /* (layers + 1, n, K) node features before each layer, and after the last */
    double *uh;                    /* (layers, n, K) */
    double *vu;                    /* (layers, n, 3, K) (layers >= 1 with vectors) */
    double *v;                     /* (n, 3, K) current vector features */
    double *a;                     /* (layers, n, D, K) A after the channel mix */
    double *aa;                    /* (layers, n, P, K) */
    double *T3;                    /* (layers, n, n3, D, K) */
    double *z1;                    /* (n, ro_hidden) pre-activation of the last readout */
} Saved;

static void *dalloc(size_t count) {  /* doubles, not zeroed: every array below is written before it is read */
    return malloc((count ? count : 1) * sizeof(double));
}

/* Layer t forward on node i: A_i (D, K) from its edges (before 1/n-bar). */
static void aggregate(const MaceParams *p, const Saved *s, int t, int64_t i, double *A, double *S) {
    const int K = p->K, D = p->D, C = p->channels[t], L1 = p->lmax + 1;
    const int vec = t > 0 && p->vec_layers > 0;
    const double *uh = s->uh + (int64_t)t * s->n * K, *vu = s->vu + (int64_t)t * s->n * 3 * K;
    memset(A, 0, sizeof(double) * D * K);
    if (vec) memset(S, 0, sizeof(double) * 3 * D * K);
    for (int64_t e = s->start[i]; e < s->start[i + 1]; e++) {
        const double *R = s->R + s->roff[t] + e * C, *Y = s->Y + e * D, *uj = uh + s->ej[e] * K;
        double x[4 * 256];
        for (int l = 0; l < L1; l++)
#pragma omp simd
            for (int k = 0; k < K; k++) x[l * K + k] = R[l * K + k] * uj[k];
        for (int d = 0; d < D; d++) {
            const double y = Y[d], *xl = x + p->l_of_m[d] * K;
            double *Ad = A + d * K;
#pragma omp simd
            for (int k = 0; k < K; k++) Ad[k] += y * xl[k];
        }
        if (vec) {  /* S[c][d'][k] += R_v[k] vu_j[c][k] Y_d' */
            const double *Rv = R + L1 * K, *vj = vu + s->ej[e] * 3 * K;
            for (int c = 0; c < 3; c++) {
                double z[256];
#pragma omp simd
                for (int k = 0; k < K; k++) z[k] = Rv[k] * vj[c * K + k];
                for (int d = 0; d < D; d++) {
                    const double y = Y[d];
                    double *Sd = S + (c * D + d) * K;
#pragma omp simd
                    for (int k = 0; k < K; k++) Sd[k] += y * z[k];
                }
            }
        }
    }
    if (vec) {  /* A[d][k] += sum_{c,d'} S[c][d'][k] msg[c][d'][d][k] */
        const double *msg = p->msg + (int64_t)(t - 1) * p->msg_nz * K;
        for (int z = 0; z < p->msg_nz; z++) {
            const double *Scd = S + p->msg_cd[z] * K, *w = msg + (int64_t)z * K;
            double *Ad = A + p->msg_d[z] * K;
#pragma omp simd
            for (int k = 0; k < K; k++) Ad[k] += Scd[k] * w[k];
        }
    }
}

/* energies (n,) and forces (n, 3); returns 0, 1 when out of memory, 3 for parameters beyond the kernel's limits */
int mace_energies_forces(const MaceParams *p, int64_t n_atoms, const int64_t *species, const Edges *edges,
                         int32_t n_threads, double *energies, double *forces) {
    const int K = p->K, D = p->D, T = p->layers, L1 = p->lmax + 1, P = p->n_pairs, NI = p->n_inv;
    const int NM = p->n_mono, VL = p->vec_layers, H = p->ro_hidden, NV = 1 + p->n_vec;
    /* one thread's scratch: the larger of the forward's and the backward's node buffers */
    const size_t scratch_size = (size_t)K * (4 * D + NI + 3 * NV + 8 + P + L1);
    const int64_t n = n_atoms, E0 = edges->n_edges;
    const double rc2 = p->cutoff * p->cutoff;
    if (n_threads < 1) n_threads = 1;
    if (K > 256 || D > MAX_D || H > READOUT_MAX || p->max_degree > 3) return 3;
    Saved s;
    memset(&s, 0, sizeof(s));
    s.n = n;
    int status = 0;
    /* edges within the cutoff, grouped by receiver */
    s.start = calloc(n + 1, sizeof(int64_t));
    int64_t *fill = calloc(n + 1, sizeof(int64_t));
    double *vecs = malloc(sizeof(double) * 3 * (E0 + 1));
    char *keep = malloc(E0 + 1);
    if (!s.start || !fill || !vecs || !keep) {
        free(s.start); free(fill); free(vecs); free(keep);
        return 1;
    }
    /* a structure with a pair closer than the tables start gets NaN energies and forces (an MD blow-up, which the
     * caller detects; the eager model is the reference for such a geometry) */
    int64_t n_graphs = 0;
    for (int64_t a = 0; a < n; a++)
        if (edges->graph[a] + 1 > n_graphs) n_graphs = edges->graph[a] + 1;
    char *close = calloc(n_graphs + 1, 1);
    if (!close) {
        free(s.start); free(fill); free(vecs); free(keep);
        return 1;
    }
    for (int64_t e = 0; e < E0; e++) {
        const int64_t i = edges->i[e], j = edges->j[e];
        double *v = vecs + 3 * e;
        const double *pi = edges->positions + 3 * i, *pj = edges->positions + 3 * j;
        for (int k = 0; k < 3; k++) v[k] = pj[k] - pi[k];
        if (edges->shifts) {
            const double *sh = edges->shifts + 3 * e, *cell = edges->cells + 9 * edges->graph[i];
            for (int k = 0; k < 3; k++) v[k] += sh[0] * cell[k] + sh[1] * cell[3 + k] + sh[2] * cell[6 + k];
        }
        const double r2 = v[0] * v[0] + v[1] * v[1] + v[2] * v[2];
        keep[e] = r2 < rc2 && r2 > 0.0;
        if (keep[e] && r2 < p->r_min * p->r_min) close[edges->graph[i]] = 1;
        if (keep[e]) s.start[i + 1]++;
    }
    for (int64_t a = 0; a < n; a++) s.start[a + 1] += s.start[a];
    const int64_t E = s.start[n];
    s.n_kept = E;
    int64_t C_total = 0;
    s.roff = malloc(sizeof(int64_t) * (T + 1));
    for (int t = 0; t < T; t++) {
        s.roff[t] = C_total * E;
        C_total += p->channels[t];
    }
    s.ej = malloc(sizeof(int64_t) * (E + 1));
    s.ei = malloc(sizeof(int64_t) * (E + 1));
    s.by_j = malloc(sizeof(int64_t) * (E + 1));
    s.by_j_start = calloc(n + 1, sizeof(int64_t));
    s.r = dalloc(E);
    s.u = dalloc(3 * E);
    s.Y = dalloc(E * D);
    s.mono = dalloc(E * NM);
    s.R = dalloc(E * C_total);
    s.dR = dalloc(E * C_total);
    s.h = dalloc((size_t)(T + 1) * n * K);
    s.uh = dalloc((size_t)T * n * K);
    s.vu = dalloc((size_t)T * n * 3 * K);
    s.v = dalloc((size_t)n * 3 * K);
    s.a = dalloc((size_t)T * n * D * K);
    s.aa = dalloc((size_t)T * n * (P ? P : 1) * K);
    s.T3 = dalloc((size_t)T * n * (p->n3 ? p->n3 : 1) * D * K);
    s.z1 = dalloc((size_t)n * H);
    /* adjoints */
    double *gh = dalloc((size_t)n * K), *gh_in = dalloc((size_t)n * K), *gv = dalloc((size_t)n * 3 * K);
    double *gA = dalloc((size_t)n * D * K), *Q = dalloc((size_t)n * 3 * D * K);
    double *guh = dalloc((size_t)E * K), *gvu = dalloc((size_t)E * 3 * K), *dvec = dalloc(3 * (size_t)E);
    double *scratch_all = dalloc((size_t)n_threads * scratch_size);
    if (!s.roff || !s.ej || !s.ei || !s.by_j || !s.by_j_start || !s.r || !s.u || !s.Y || !s.mono || !s.R || !s.dR || !s.h || !s.uh || !s.vu ||
        !s.v || !s.a || !s.aa || !s.T3 || !s.z1 || !gh || !gh_in || !gv || !gA || !Q || !guh || !gvu || !dvec ||
        !scratch_all) {
        status = 1;
        goto done;
    }
    memcpy(fill, s.start, sizeof(int64_t) * (n + 1));
    for (int64_t e = 0; e < E0; e++) {
        if (!keep[e]) continue;
        const int64_t q = fill[edges->i[e]]++;
        const double *v = vecs + 3 * e;
        const double r = sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
        s.ei[q] = edges->i[e];
        s.ej[q] = edges->j[e];
        s.r[q] = r;
        for (int k = 0; k < 3; k++) s.u[3 * q + k] = v[k] / r;
    }
    for (int64_t e = 0; e < E; e++) s.by_j_start[s.ej[e] + 1]++;
    for (int64_t a = 0; a < n; a++) s.by_j_start[a + 1] += s.by_j_start[a];
    memcpy(fill, s.by_j_start, sizeof(int64_t) * (n + 1));
    for (int64_t e = 0; e < E; e++) s.by_j[fill[s.ej[e]]++] = e;
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int64_t e = 0; e < E; e++) {
        monomials(p, s.u + 3 * e, s.mono + e * NM);
        harmonics(p, s.mono + e * NM, s.Y + e * D);
        for (int t = 0; t < T; t++)
            radial(p, t, s.r[e], s.R + s.roff[t] + e * p->channels[t], s.dR + s.roff[t] + e * p->channels[t]);
    }
    for (int64_t i = 0; i < n; i++) memcpy(s.h + i * K, p->embedding + species[i] * K, sizeof(double) * K);
    memset(energies, 0, sizeof(double) * n);

    /* ---- forward ---- */
    for (int t = 0; t < T; t++) {
        const double *h = s.h + (int64_t)t * n * K;
        double *hn = s.h + (int64_t)(t + 1) * n * K, *uh = s.uh + (int64_t)t * n * K;
        double *vu = s.vu + (int64_t)t * n * 3 * K;
        const int vec_in = t > 0 && VL > 0, vec_out = t < VL;
#pragma omp parallel num_threads(n_threads)
        {
            double *scratch = scratch_all + (size_t)THREAD_ID * scratch_size;
            double *A = scratch, *S = A + D * K, *inv = S + 3 * D * K, *vecv = inv + NI * K, *b = vecv + NV * 3 * K;
            double *bv = b + K;
#pragma omp for schedule(static)
            for (int64_t i = 0; i < n; i++) {  /* the messages' node factors, before any node aggregates them */
                vecmat(h + i * K, p->up + (int64_t)t * K * K, K, K, uh + i * K, 0);
                if (vec_in)
                    for (int c = 0; c < 3; c++)
                        vecmat(s.v + (i * 3 + c) * K, p->up_vec + (int64_t)(t - 1) * K * K, K, K, vu + (i * 3 + c) * K,
                               0);
            }
#pragma omp for schedule(dynamic, 1)
            for (int64_t i = 0; i < n; i++) {
                const int sp = (int)species[i];
                aggregate(p, &s, t, i, A, S);
                double *a = s.a + ((int64_t)t * n + i) * D * K, *aa = s.aa + ((int64_t)t * n + i) * P * K;
                double *T3 = s.T3 + ((int64_t)t * n + i) * p->n3 * D * K;
                for (int d = 0; d < D; d++) {
                    for (int k = 0; k < K; k++) A[d * K + k] *= p->inv_avg;
                    vecmat(A + d * K, p->a_mix + ((int64_t)t * L1 + p->l_of_m[d]) * K * K, K, K, a + d * K, 0);
                }
                for (int q = 0; q < P; q++) {
                    const double *x1 = a + p->pair_m1[q] * K, *x2 = a + p->pair_m2[q] * K;
                    for (int k = 0; k < K; k++) aa[q * K + k] = x1[k] * x2[k];
                }
                memset(inv, 0, sizeof(double) * NI * K);
                memcpy(inv, a, sizeof(double) * K);
                for (int z = 0; z < p->nz2; z++) {
                    const double v = p->c2_v[z], *x = aa + p->c2_p[z] * K;
                    double *o = inv + (1 + p->c2_l[z]) * K;
                    for (int k = 0; k < K; k++) o[k] += v * x[k];
                }
                if (p->n3) {
                    memset(T3, 0, sizeof(double) * p->n3 * D * K);
                    for (int z = 0; z < p->nz3; z++) {
                        const double v = p->c3_v[z], *x = aa + p->c3_p[z] * K;
                        double *o = T3 + (p->c3_q[z] * D + p->c3_d[z]) * K;
                        for (int k = 0; k < K; k++) o[k] += v * x[k];
                    }
                    for (int q = 0; q < p->n3; q++) {
                        double *o = inv + (1 + L1 + q) * K;
                        for (int d = 0; d < D; d++)
                            for (int k = 0; k < K; k++) o[k] += T3[(q * D + d) * K + k] * a[d * K + k];
                    }
                }
                const double *wc = p->contraction + ((int64_t)t * p->n_el + sp) * NI * K;
                memset(b, 0, sizeof(double) * K);
                for (int q = 0; q < NI; q++)
                    for (int k = 0; k < K; k++) b[k] += inv[q * K + k] * wc[q * K + k];
                double *hi = hn + i * K;
                vecmat(b, p->mix_w + (int64_t)t * K * K, K, K, hi, 0);
                vecmat(h + i * K, p->skip + (int64_t)t * K * K, K, K, hi, 1);
                for (int k = 0; k < K; k++) hi[k] += p->mix_b[t * K + k];
                if (vec_out) {
                    memset(vecv, 0, sizeof(double) * NV * 3 * K);
                    for (int c = 0; c < 3; c++) memcpy(vecv + c * K, a + (1 + c) * K, sizeof(double) * K);
                    for (int z = 0; z < p->nzv; z++) {
                        const double v = p->cv_v[z], *x = aa + p->cv_p[z] * K;
                        double *o = vecv + ((1 + p->cv_q[z]) * 3 + p->cv_c[z]) * K;
                        for (int k = 0; k < K; k++) o[k] += v * x[k];
                    }
                    const double *wv = p->vec_contraction + ((int64_t)t * p->n_el + sp) * NV * K;
                    memset(bv, 0, sizeof(double) * 3 * K);
                    for (int q = 0; q < NV; q++)
                        for (int c = 0; c < 3; c++)
                            for (int k = 0; k < K; k++) bv[c * K + k] += vecv[(q * 3 + c) * K + k] * wv[q * K + k];
                    /* v <- bv @ vec_mix (+ v); this node's own row only, so in place is safe */
                    for (int c = 0; c < 3; c++)
                        vecmat(bv + c * K, p->vec_mix + (int64_t)t * K * K, K, K, s.v + (i * 3 + c) * K, t > 0);
                }
                /* this layer's readout */
                double e = 0.0;
                if (t < T - 1) {
                    e = p->readout_b[t];
                    for (int k = 0; k < K; k++) e += p->readout_w[t * K + k] * hi[k];
                } else {
                    double *z = s.z1 + i * H;
                    for (int o = 0; o < H; o++) z[o] = p->ro1_b[o];
                    for (int k = 0; k < K; k++)
                        for (int o = 0; o < H; o++) z[o] += hi[k] * p->ro1_w[k * H + o];
                    e = p->ro2_b;
                    for (int o = 0; o < H; o++) e += p->ro2_w[o] * silu(z[o]);
                }
                energies[i] += p->scale * e;
            }
        }
    }

    /* ---- backward: gh is dE/dh of the current layer's output, gv dE/dv of the current vector features ---- */
    memset(gh, 0, sizeof(double) * n * K);
    memset(gv, 0, sizeof(double) * n * 3 * K);
    memset(dvec, 0, sizeof(double) * 3 * E);
    for (int t = T - 1; t >= 0; t--) {
        const int vec_in = t > 0 && VL > 0, vec_out = t < VL, C = p->channels[t];
        const double *uh = s.uh + (int64_t)t * n * K, *vu = s.vu + (int64_t)t * n * 3 * K;
#pragma omp parallel num_threads(n_threads)
        {
            double *scratch = scratch_all + (size_t)THREAD_ID * scratch_size;
            double *gb = scratch, *ginv = gb + K, *ga = ginv + NI * K, *gaa = ga + D * K, *gbv = gaa + P * K;
            double *gvec = gbv + 3 * K, *gT = gvec + NV * 3 * K, *Pl = gT + K, *gz = Pl + L1 * K, *grv = gz + K;
#pragma omp for schedule(dynamic, 1)
            for (int64_t i = 0; i < n; i++) {
                const int sp = (int)species[i];
                const double *a = s.a + ((int64_t)t * n + i) * D * K;
                const double *T3 = s.T3 + ((int64_t)t * n + i) * p->n3 * D * K;
                double *g = gh + i * K, *gi = gh_in + i * K;
                if (t < T - 1) {  /* the readout of this layer's output */
                    for (int k = 0; k < K; k++) g[k] += p->scale * p->readout_w[t * K + k];
                } else {
                    const double *z = s.z1 + i * H;
                    for (int o = 0; o < H; o++) {
                        const double c = p->scale * p->ro2_w[o] * dsilu(z[o]);
                        for (int k = 0; k < K; k++) g[k] += c * p->ro1_w[k * H + o];
                    }
                }
                memset(gb, 0, sizeof(double) * K);
                matvec_acc(p->mix_w + (int64_t)t * K * K, g, K, K, gb);
                if (t > 0) {  /* the first layer's input is the embedding: no gradient to carry */
                    memset(gi, 0, sizeof(double) * K);
                    matvec_acc(p->skip + (int64_t)t * K * K, g, K, K, gi);
                }
                const double *wc = p->contraction + ((int64_t)t * p->n_el + sp) * NI * K;
                for (int q = 0; q < NI; q++)
                    for (int k = 0; k < K; k++) ginv[q * K + k] = gb[k] * wc[q * K + k];
                memset(ga, 0, sizeof(double) * D * K);
                memset(gaa, 0, sizeof(double) * P * K);
                for (int k = 0; k < K; k++) ga[k] += ginv[k];
                for (int z = 0; z < p->nz2; z++) {
                    const double v = p->c2_v[z], *x = ginv + (1 + p->c2_l[z]) * K;
                    double *o = gaa + p->c2_p[z] * K;
                    for (int k = 0; k < K; k++) o[k] += v * x[k];
                }
                if (p->n3) {  /* inv_q = sum_d T[q][d] a_d: dT = ginv_q a_d, da_d += ginv_q T[q][d] */
                    for (int q = 0; q < p->n3; q++) {
                        const double *x = ginv + (1 + L1 + q) * K;
                        for (int d = 0; d < D; d++)
                            for (int k = 0; k < K; k++) ga[d * K + k] += x[k] * T3[(q * D + d) * K + k];
                    }
                    for (int z = 0; z < p->nz3; z++) {
                        const double v = p->c3_v[z], *x = ginv + (1 + L1 + p->c3_q[z]) * K, *ad = a + p->c3_d[z] * K;
                        double *o = gaa + p->c3_p[z] * K;
                        for (int k = 0; k < K; k++) o[k] += v * x[k] * ad[k];
                    }
                }
                if (vec_out) {  /* v_t = bv @ vec_mix (+ v_{t-1}): gbv = gv @ vec_mixᵀ */
                    const double *wv = p->vec_contraction + ((int64_t)t * p->n_el + sp) * NV * K;
                    memset(gbv, 0, sizeof(double) * 3 * K);
                    for (int c = 0; c < 3; c++)
                        matvec_acc(p->vec_mix + (int64_t)t * K * K, gv + (i * 3 + c) * K, K, K, gbv + c * K);
                    for (int q = 0; q < NV; q++)
                        for (int c = 0; c < 3; c++)
                            for (int k = 0; k < K; k++) gvec[(q * 3 + c) * K + k] = gbv[c * K + k] * wv[q * K + k];
                    for (int c = 0; c < 3; c++)
                        for (int k = 0; k < K; k++) ga[(1 + c) * K + k] += gvec[c * K + k];
                    for (int z = 0; z < p->nzv; z++) {
                        const double v = p->cv_v[z], *x = gvec + ((1 + p->cv_q[z]) * 3 + p->cv_c[z]) * K;
                        double *o = gaa + p->cv_p[z] * K;
                        for (int k = 0; k < K; k++) o[k] += v * x[k];
                    }
                }
                for (int q = 0; q < P; q++) {
                    const int m1 = p->pair_m1[q], m2 = p->pair_m2[q];
                    for (int k = 0; k < K; k++) {
                        ga[m1 * K + k] += gaa[q * K + k] * a[m2 * K + k];
                        ga[m2 * K + k] += gaa[q * K + k] * a[m1 * K + k];
                    }
                }
                /* a_d = (A_d / n-bar) @ a_mix[l(d)] */
                double *gAi = gA + i * D * K;
                for (int d = 0; d < D; d++) {
                    memset(gT, 0, sizeof(double) * K);
                    matvec_acc(p->a_mix + ((int64_t)t * L1 + p->l_of_m[d]) * K * K, ga + d * K, K, K, gT);
                    for (int k = 0; k < K; k++) gAi[d * K + k] = gT[k] * p->inv_avg;
                }
                if (vec_in) {  /* Q[c][d'][k] = sum_d gA[d][k] msg[c][d'][d][k] */
                    const double *msg = p->msg + (int64_t)(t - 1) * p->msg_nz * K;
                    double *Qi = Q + i * 3 * D * K;
                    memset(Qi, 0, sizeof(double) * 3 * D * K);
                    for (int z = 0; z < p->msg_nz; z++) {
                        const double *w = msg + (int64_t)z * K, *x = gAi + p->msg_d[z] * K;
                        double *o = Qi + p->msg_cd[z] * K;
#pragma omp simd
                        for (int k = 0; k < K; k++) o[k] += x[k] * w[k];
                    }
                }
            }
            /* the edges of each receiver: dE/dr_ij, and the neighbours' adjoints (per edge, summed below) */
#pragma omp for schedule(dynamic, 1)
            for (int64_t i = 0; i < n; i++) {
                const double *gAi = gA + i * D * K, *Qi = Q + i * 3 * D * K;
                for (int64_t e = s.start[i]; e < s.start[i + 1]; e++) {
                    const int64_t j = s.ej[e];
                    const double *R = s.R + s.roff[t] + e * C, *dR = s.dR + s.roff[t] + e * C, *Y = s.Y + e * D;
                    const double *uj = uh + j * K;
                    double gY[MAX_D], along = 0.0;
                    double *ge = guh + e * K;
                    memset(Pl, 0, sizeof(double) * L1 * K);
                    for (int d = 0; d < D; d++) {
                        const double y = Y[d], *g = gAi + d * K, *Rl = R + p->l_of_m[d] * K;
                        double *o = Pl + p->l_of_m[d] * K, acc = 0.0;
#pragma omp simd reduction(+ : acc)
                        for (int k = 0; k < K; k++) {
                            o[k] += g[k] * y;
                            acc += g[k] * Rl[k] * uj[k];
                        }
                        gY[d] = acc;
                    }
                    if (t > 0) memset(ge, 0, sizeof(double) * K);
                    for (int l = 0; l < L1; l++) {
                        const double *o = Pl + l * K, *Rl = R + l * K, *dRl = dR + l * K;
                        double acc = 0.0;
#pragma omp simd reduction(+ : acc)
                        for (int k = 0; k < K; k++) acc += o[k] * uj[k] * dRl[k];
                        along += acc;
                        if (t > 0)
#pragma omp simd
                            for (int k = 0; k < K; k++) ge[k] += Rl[k] * o[k];
                    }
                    if (vec_in) {
                        const double *Rv = R + L1 * K, *dRv = dR + L1 * K, *vj = vu + j * 3 * K;
                        double *gve = gvu + e * 3 * K;
                        memset(grv, 0, sizeof(double) * K);
                        for (int c = 0; c < 3; c++) {
                            memset(gz, 0, sizeof(double) * K);
                            for (int d = 0; d < D; d++) {
                                const double y = Y[d], *q = Qi + (c * D + d) * K, *vc = vj + c * K;
                                double acc = 0.0;
#pragma omp simd reduction(+ : acc)
                                for (int k = 0; k < K; k++) {
                                    gz[k] += q[k] * y;
                                    acc += q[k] * Rv[k] * vc[k];
                                }
                                gY[d] += acc;
                            }
                            for (int k = 0; k < K; k++) {
                                grv[k] += gz[k] * vj[c * K + k];
                                gve[c * K + k] = gz[k] * Rv[k];
                            }
                        }
                        for (int k = 0; k < K; k++) along += grv[k] * dRv[k];
                    }
                    double g[3];
                    harmonics_gradient(p, s.mono + e * NM, gY, g);
                    const double *u = s.u + 3 * e, inv_r = 1.0 / s.r[e];
                    const double ug = g[0] * u[0] + g[1] * u[1] + g[2] * u[2];
                    for (int k = 0; k < 3; k++) dvec[3 * e + k] += along * u[k] + (g[k] - ug * u[k]) * inv_r;
                }
            }
            /* the neighbours' adjoints: uh_j and vu_j summed over the edges j sends, then back to h and v */
#pragma omp for schedule(static)
            for (int64_t j = 0; j < (t > 0 ? n : 0); j++) {  /* (none into the first layer's embedding) */
                double *sum = gz;
                memset(sum, 0, sizeof(double) * K);
                for (int64_t q = s.by_j_start[j]; q < s.by_j_start[j + 1]; q++) {
                    const double *x = guh + s.by_j[q] * K;
                    for (int k = 0; k < K; k++) sum[k] += x[k];
                }
                matvec_acc(p->up + (int64_t)t * K * K, sum, K, K, gh_in + j * K);
                if (vec_in) {  /* gv was dE/dv_t; v_t = v_{t-1} + ..., so it carries over, plus the messages' part */
                    for (int c = 0; c < 3; c++) {
                        memset(sum, 0, sizeof(double) * K);
                        for (int64_t q = s.by_j_start[j]; q < s.by_j_start[j + 1]; q++) {
                            const double *x = gvu + (s.by_j[q] * 3 + c) * K;
                            for (int k = 0; k < K; k++) sum[k] += x[k];
                        }
                        matvec_acc(p->up_vec + (int64_t)(t - 1) * K * K, sum, K, K, gv + (j * 3 + c) * K);
                    }
                }
            }
        }
        double *swap = gh;
        gh = gh_in;
        gh_in = swap;
    }
    memset(forces, 0, sizeof(double) * 3 * n);
    for (int64_t e = 0; e < E; e++) {
        double *fi = forces + 3 * s.ei[e], *fj = forces + 3 * s.ej[e];
        for (int k = 0; k < 3; k++) {
            fi[k] += dvec[3 * e + k];
            fj[k] -= dvec[3 * e + k];
        }
    }
    for (int64_t a = 0; a < n; a++)
        if (close[edges->graph[a]]) energies[a] = forces[3 * a] = forces[3 * a + 1] = forces[3 * a + 2] = NAN;
done:
    free(close); free(fill); free(vecs); free(keep);
    free(s.start); free(s.roff); free(s.ej); free(s.ei); free(s.by_j); free(s.by_j_start); free(s.r); free(s.u); free(s.Y); free(s.mono); free(s.R);
    free(s.dR); free(s.h); free(s.uh); free(s.vu); free(s.v); free(s.a); free(s.aa); free(s.T3); free(s.z1);
    free(gh); free(gh_in); free(gv); free(gA); free(Q); free(guh); free(gvu); free(dvec); free(scratch_all);
    return status;
}
