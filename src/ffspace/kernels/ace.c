/* Linear ACE energies and forces without autograd, in double precision.
 *
 * Built on the user's machine at first use by ffspace/kernels/build.py (gcc -std=c11 -O3 -march=native -fopenmp) and
 * called through ctypes by ffspace/potential/native.py, which derives every table below from a model package
 * (weights are data, never code). The mathematics is that of ffspace/models/ace.py, whose forward pass is the
 * reference; ffspace/potential/analytic.py writes the same derivative with torch operations.
 *
 * Atoms are sorted by element and taken LANES at a time ("blocks"): the polynomial of a block runs with the atoms
 * as the innermost, contiguous, fixed-length axis, so every inner loop is one SIMD instruction and all atoms of a
 * block share their weights. Per block:
 *   1. per atom, A_k,lm = (1/n̄) Σ_j R_n(r_ij) Y_lm(r̂_ij), channel k = (element of j, n)   (and A' when separate)
 *   2. E = w0 + w1·A_0 + ½ A·(W + Wᵀ)A + Σ_slots Σ_entries w U_ab,(p,m3) A'_c,m3, U_ab,(p,m3) = Σ_nz C A'_a,m1 A'_b,m2
 *      (one slot at a time, so U stays in the L1 cache), and G = ∂E/∂A by the same products read backwards;
 *   3. per edge, ∂E_i/∂r_ij = (1/n̄) Σ G ∂(R Y)/∂r_ij (radial part along r̂, tangential part from ∇Y).
 * Blocks are independent (one thread each); the edges' gradients are scattered to the forces in one serial pass.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif
#define LANES 8
#define MAX_Y 25  /* harmonics up to l = 4 */
#define MAX_MONO 35  /* monomials of degree ≤ 4 */

typedef struct {
    int32_t n_el, n_rbf, d;        /* channels K = n_el·n_rbf; D = (lmax_a + 1)² harmonics in A */
    double cutoff, inv_avg;        /* Å; 1/n̄ */
    int32_t separate3;             /* 1: A' on its own radial functions; 0: A' is a slice of A */
    int32_t n_rbf3, d3;            /* A': radial functions, (lmax_3 + 1)² harmonics */
    double cutoff3;
    int32_t max_degree;            /* largest total degree of a monomial */
    int32_t n_mono;                /* monomials x^a y^b z^c of the unit vector */
    const int32_t *mono_exp;       /* (n_mono, 3) */
    const double *harm;            /* (n_mono, DY): Y_m = Σ_q harm[q][m] monomial_q */
    const int32_t *mono_lower;     /* (n_mono, 3): the monomial ∂/∂u_k leaves (exponent of u_k lowered), or -1 */
    const double *w0, *w1;         /* (S,), (S, K) */
    int32_t has_pairs;
    const double *w2sym;           /* (S, K, K, D): the ν = 2 weight of pair (a, b) at m, plus its transpose */
    int32_t n_slots;               /* ν = 3 slots (p, m3); per slot: */
    const int32_t *cg_start;       /* (n_slots + 1,) its Clebsch–Gordan nonzeros */
    const int32_t *cg_m1, *cg_m2;
    const double *cg_val;
    const int32_t *group_start;    /* (n_slots + 1,) its groups: entries sharing the third factor c */
    const int32_t *group_c;        /* (groups,) */
    const int32_t *slot_m;         /* (n_slots,) m3 of the slot */
    const int32_t *entry_start;    /* (groups + 1,) */
    const int32_t *entry_ab;       /* (entries,) a·K3 + b */
    int32_t n_entries;
    const double *w3;              /* (S, entries) */
} AceParams;

typedef struct {  /* the graph: r_ij = positions[j] - positions[i] + shifts_ij · cell of i's structure */
    int64_t n_edges;
    const int64_t *i, *j;          /* (E,) centre and neighbour */
    const double *positions;       /* (N, 3) Å */
    const double *shifts;          /* (E, 3) integer cell shifts, or NULL (no periodic images) */
    const double *cells;           /* (G, 3, 3) cell vectors as rows */
    const int64_t *graph;          /* (N,) the structure of each atom */
} Edges;

/* r_ij of edge e */
static void edge_vector(const Edges *g, int64_t e, double *v) {
    const double *pi = g->positions + 3 * g->i[e], *pj = g->positions + 3 * g->j[e];
    for (int k = 0; k < 3; k++) v[k] = pj[k] - pi[k];
    if (g->shifts) {
        const double *sh = g->shifts + 3 * e, *cell = g->cells + 9 * g->graph[g->i[e]];
        for (int k = 0; k < 3; k++) v[k] += sh[0] * cell[k] + sh[1] * cell[3 + k] + sh[2] * cell[6 + k];
    }
}

static int harmonics_count(const AceParams *p) { return p->d > p->d3 ? p->d : p->d3; }

/* The first monomial of degree d (monomials come in order of degree: 1, 3, 6, 10, ... of them). */
#define MONO_START(d) ((d) * ((d) + 1) * ((d) + 2) / 6)

/* An atom's edges in chunks of LANES, each field as (field size, LANES) so that every operation on a chunk is one
 * SIMD instruction: r, u[3], R, dR, R3, dR3, monomials, Y. */
enum { F_R = 0, F_U = 1 };
static int chunk_size(const AceParams *p) {
    return LANES * (4 + 2 * p->n_rbf + 2 * p->n_rbf3 + p->n_mono + harmonics_count(p));
}

typedef struct {  /* one thread's buffers */
    double *A, *A3, *G, *G3;       /* one atom: (K, D), (K3, D3) */
    double *Ab, *Gb, *Xb, *GXb;    /* the block: (K, D, LANES), (D3, K3, LANES) */
    double *U, *dU;                /* one slot: (K3·K3, LANES) */
    double *edge;                  /* per atom of the block: its chunks */
    int64_t *eid;                  /* per atom of the block: its edges within the cutoff (padded to chunks) */
    int64_t count[LANES];          /* how many */
    int64_t atom_capacity;         /* chunks per atom */
    double *YT, *PT, *C;           /* (LANES, DY), (LANES, DY), (n_mono, LANES) scratch */
} Work;

static void *zalloc(size_t count) {  /* 64-byte aligned doubles */
    size_t bytes = ((count * sizeof(double) + 63) / 64) * 64;
    void *ptr = aligned_alloc(64, bytes ? bytes : 64);
    if (ptr) memset(ptr, 0, bytes);
    return ptr;
}

static int work_init(Work *w, const AceParams *p, int64_t max_edges) {
    const size_t K = p->n_el * p->n_rbf, K3 = p->n_el * p->n_rbf3, DY = harmonics_count(p);
    memset(w, 0, sizeof(*w));
    w->atom_capacity = (max_edges + LANES - 1) / LANES + 1;
    w->A = zalloc(K * p->d);
    w->G = zalloc(K * p->d);
    w->A3 = zalloc(K3 * p->d3);
    w->G3 = zalloc(K3 * p->d3);
    w->Ab = zalloc(K * p->d * LANES);
    w->Gb = zalloc(K * p->d * LANES);
    w->Xb = zalloc(K3 * p->d3 * LANES);
    w->GXb = zalloc(K3 * p->d3 * LANES);
    w->U = zalloc(K3 * K3 * LANES);
    w->dU = zalloc(K3 * K3 * LANES);
    w->edge = zalloc((size_t)chunk_size(p) * (size_t)w->atom_capacity * LANES);
    w->eid = malloc(sizeof(int64_t) * (size_t)w->atom_capacity * LANES * LANES);
    w->YT = zalloc(LANES * DY);
    w->PT = zalloc(LANES * DY);
    w->C = zalloc((size_t)p->n_mono * LANES);
    return w->A && w->G && w->A3 && w->G3 && w->Ab && w->Gb && w->Xb && w->GXb && w->U && w->dU && w->edge &&
           w->eid && w->YT && w->PT && w->C;
}

static void work_free(Work *w) {
    free(w->A); free(w->G); free(w->A3); free(w->G3); free(w->Ab); free(w->Gb); free(w->Xb); free(w->GXb);
    free(w->U); free(w->dU); free(w->edge); free(w->eid); free(w->YT); free(w->PT); free(w->C);
}

/* R_n(r) and dR_n/dr on a chunk (n, LANES), θ = πr/rc: sin and cos per lane, then the recurrences lane-wise. */
static void radial_chunk(const double *r, double rc, int n_rbf, double *R, double *dR) {
    double s1[LANES], c1[LANES], s[LANES], c[LANES], sp[LANES], cp[LANES], fcut[LANES], dfcut[LANES], inv[LANES];
    const double k = M_PI / rc;
    for (int L = 0; L < LANES; L++) {
        s1[L] = sin(k * r[L]);
        c1[L] = cos(k * r[L]);
    }
    for (int L = 0; L < LANES; L++) {
        fcut[L] = 0.5 * (c1[L] + 1.0);
        dfcut[L] = -0.5 * k * s1[L];
        inv[L] = 1.0 / r[L];
        s[L] = s1[L]; c[L] = c1[L]; sp[L] = 0.0; cp[L] = 1.0;
    }
    for (int n = 0; n < n_rbf; n++) {
        const double f = (n + 1) * k;
        for (int L = 0; L < LANES; L++) {
            const double sr = s[L] * inv[L];
            R[n * LANES + L] = sr * fcut[L];
            dR[n * LANES + L] = (f * c[L] * inv[L] - sr * inv[L]) * fcut[L] + sr * dfcut[L];
            const double sn = 2.0 * c1[L] * s[L] - sp[L], cn = 2.0 * c1[L] * c[L] - cp[L];
            sp[L] = s[L]; cp[L] = c[L]; s[L] = sn; c[L] = cn;
        }
    }
}

/* Step 1 for one atom: its edges within the cutoff in chunks (into `buf`, their ids into `eid`), and its bases into
 * w->A (and w->A3). Returns the number of edges kept. */
static int64_t atom_bases(const AceParams *p, int64_t i, const int64_t *start, const int64_t *order,
                          const int64_t *species, const Edges *edges, Work *w, double *buf0, int64_t *eid) {
    const int D = p->d, D3 = p->d3, DY = harmonics_count(p), CH = chunk_size(p);
    const int K = p->n_el * p->n_rbf, K3 = p->n_el * p->n_rbf3, NR = p->n_rbf, NR3 = p->n_rbf3;
    const double rc2 = p->cutoff * p->cutoff;
    memset(w->A, 0, sizeof(double) * K * D);
    if (p->separate3) memset(w->A3, 0, sizeof(double) * K3 * D3);
    int64_t kept = 0;
    for (int64_t q = start[i]; q < start[i + 1]; q++) {  /* the edges within the cutoff (a Verlet list has more) */
        double v[3];
        edge_vector(edges, order[q], v);
        const double r2 = v[0] * v[0] + v[1] * v[1] + v[2] * v[2];
        if (r2 < rc2 && r2 > 0.0) {
            double *chunk = buf0 + (kept / LANES) * CH;
            const int L = kept % LANES;
            const double r = sqrt(r2);
            chunk[F_R * LANES + L] = r;
            for (int k = 0; k < 3; k++) chunk[(F_U + k) * LANES + L] = v[k] / r;
            eid[kept++] = order[q];
        }
    }
    for (int64_t L = kept; L % LANES; L++) {  /* padding lanes: a harmless unit vector at r = rc, R = 0 */
        double *chunk = buf0 + (L / LANES) * CH;
        chunk[F_R * LANES + L % LANES] = p->cutoff;
        for (int k = 0; k < 3; k++) chunk[(F_U + k) * LANES + L % LANES] = k == 0;
    }
    for (int64_t c0 = 0; c0 < kept; c0 += LANES) {
        double *chunk = buf0 + (c0 / LANES) * CH, *r = chunk, *u = chunk + LANES;
        double *R = chunk + 4 * LANES, *dR = R + NR * LANES, *R3 = dR + NR * LANES, *dR3 = R3 + NR3 * LANES;
        double *mono = dR3 + NR3 * LANES, *Y = mono + p->n_mono * LANES;
        const int lanes = kept - c0 < LANES ? (int)(kept - c0) : LANES;
        radial_chunk(r, p->cutoff, NR, R, dR);
        for (int L = lanes; L < LANES; L++)
            for (int n = 0; n < NR; n++) R[n * LANES + L] = dR[n * LANES + L] = 0.0;
        if (p->separate3) {
            radial_chunk(r, p->cutoff3, NR3, R3, dR3);
            for (int L = 0; L < LANES; L++)
                if (L >= lanes || !(r[L] < p->cutoff3))
                    for (int n = 0; n < NR3; n++) R3[n * LANES + L] = dR3[n * LANES + L] = 0.0;
        }
        double pw[3][8][LANES];  /* powers of the components */
        for (int k = 0; k < 3; k++) {
            for (int L = 0; L < LANES; L++) pw[k][0][L] = 1.0;
            for (int e = 1; e <= p->max_degree; e++)
                for (int L = 0; L < LANES; L++) pw[k][e][L] = pw[k][e - 1][L] * u[k * LANES + L];
        }
        for (int q = 0; q < p->n_mono; q++) {
            const int32_t *e = p->mono_exp + 3 * q;
            for (int L = 0; L < LANES; L++) mono[q * LANES + L] = pw[0][e[0]][L] * pw[1][e[1]][L] * pw[2][e[2]][L];
        }
        /* Y_l is homogeneous of degree l: only that degree's monomials enter */
        for (int l = 0; l * l < DY; l++) {
            for (int m = l * l; m < (l + 1) * (l + 1); m++) {
                double acc[LANES] = {0};
                for (int q = MONO_START(l); q < MONO_START(l + 1); q++) {
                    const double h = p->harm[q * DY + m];
                    if (h == 0.0) continue;
                    for (int L = 0; L < LANES; L++) acc[L] += h * mono[q * LANES + L];
                }
                for (int L = 0; L < LANES; L++) Y[m * LANES + L] = acc[L];
            }
        }
        for (int L = 0; L < lanes; L++) {  /* A[element of j][n][m] += R_n Y_m / n̄ */
            const int sj = (int)species[edges->j[eid[c0 + L]]];
            double *Aj = w->A + (int64_t)sj * NR * D, *yl = w->YT + L * DY;
            for (int m = 0; m < DY; m++) yl[m] = Y[m * LANES + L];
            for (int n = 0; n < NR; n++) {
                const double rn = R[n * LANES + L] * p->inv_avg;
                for (int m = 0; m < D; m++) Aj[n * D + m] += rn * yl[m];
            }
            if (p->separate3) {
                double *A3j = w->A3 + (int64_t)sj * NR3 * D3;
                for (int n = 0; n < NR3; n++) {
                    const double rn = R3[n * LANES + L] * p->inv_avg;
                    for (int m = 0; m < D3; m++) A3j[n * D3 + m] += rn * yl[m];
                }
            }
        }
    }
    return kept;
}

/* For one edge and a basis built from radial functions R (n_rbf of them, stride LANES) and harmonics Y (D of them):
 * P_m += Σ_n G_nm R_n, and the radial part Σ_n R'_n Σ_m G_nm Y_m is returned. */
static double radial_adjoint(const double *G, int n_rbf, int D, const double *R, const double *dR, const double *Y,
                             double *P) {
    double along = 0.0;
    for (int n = 0; n < n_rbf; n++) {
        double hy = 0.0;
        const double rn = R[n * LANES];
#pragma omp simd reduction(+ : hy)
        for (int m = 0; m < D; m++) {
            hy += G[n * D + m] * Y[m];
            P[m] += G[n * D + m] * rn;
        }
        along += hy * dR[n * LANES];
    }
    return along;
}

/* Step 3 for one atom: ∂E/∂r_ij of its kept edges into dvec, from G (w->G, w->G3) and the chunks of step 1. */
static void atom_gradient(const AceParams *p, const int64_t *species, const Edges *edges, Work *w,
                          const double *buf0, const int64_t *eid, int64_t kept, double *dvec) {
    const int D = p->d, D3 = p->d3, DY = harmonics_count(p), CH = chunk_size(p), NR = p->n_rbf, NR3 = p->n_rbf3;
    for (int64_t c0 = 0; c0 < kept; c0 += LANES) {
        const double *chunk = buf0 + (c0 / LANES) * CH, *r = chunk, *u = chunk + LANES;
        const double *R = chunk + 4 * LANES, *dR = R + NR * LANES, *R3 = dR + NR * LANES, *dR3 = R3 + NR3 * LANES;
        const double *mono = dR3 + NR3 * LANES, *Y = mono + p->n_mono * LANES;
        const int lanes = kept - c0 < LANES ? (int)(kept - c0) : LANES;
        double along[LANES] = {0};
        /* per lane: P_m = Σ_n G R_n (into PT) and the radial part Σ_n R'_n Σ_m G Y_m */
        for (int L = 0; L < LANES; L++) {
            double *pl = w->PT + L * DY;
            for (int m = 0; m < DY; m++) pl[m] = 0.0;
            if (L >= lanes) continue;
            const int sj = (int)species[edges->j[eid[c0 + L]]];
            double *yl = w->YT + L * DY;
            for (int m = 0; m < DY; m++) yl[m] = Y[m * LANES + L];
            along[L] = radial_adjoint(w->G + (int64_t)sj * NR * D, NR, D, R + L, dR + L, yl, pl);
            if (p->separate3)
                along[L] += radial_adjoint(w->G3 + (int64_t)sj * NR3 * D3, NR3, D3, R3 + L, dR3 + L, yl, pl);
        }
        /* ∇_u Σ_m P_m Y_m(u) = Σ_q C_q ∇(monomial_q), C_q = Σ_m harm[q][m] P_m */
        double g[3][LANES] = {{0}};
        for (int l = 1; l * l < DY; l++) {
            for (int q = MONO_START(l); q < MONO_START(l + 1); q++) {
                double cq[LANES] = {0};
                for (int m = l * l; m < (l + 1) * (l + 1); m++) {
                    const double h = p->harm[q * DY + m];
                    if (h == 0.0) continue;
                    for (int L = 0; L < LANES; L++) cq[L] += h * w->PT[L * DY + m];
                }
                const int32_t *e = p->mono_exp + 3 * q, *lower = p->mono_lower + 3 * q;
                for (int k = 0; k < 3; k++) {
                    if (!e[k]) continue;
                    const double *ml = mono + lower[k] * LANES, f = e[k];
                    for (int L = 0; L < LANES; L++) g[k][L] += f * cq[L] * ml[L];
                }
            }
        }
        for (int L = 0; L < lanes; L++) {
            const double ux = u[L], uy = u[LANES + L], uz = u[2 * LANES + L];
            const double ug = g[0][L] * ux + g[1][L] * uy + g[2][L] * uz, inv_r = 1.0 / r[L];
            double *out = dvec + 3 * eid[c0 + L];
            out[0] = p->inv_avg * (along[L] * ux + (g[0][L] - ug * ux) * inv_r);
            out[1] = p->inv_avg * (along[L] * uy + (g[1][L] - ug * uy) * inv_r);
            out[2] = p->inv_avg * (along[L] * uz + (g[2][L] - ug * uz) * inv_r);
        }
    }
}

/* Step 2 for a block of atoms of element s: energies (LANES,) and G = ∂E/∂A in w->Gb (and w->GXb). */
static void block_energy(const AceParams *p, int s, Work *w, double *energy) {
    const int K = p->n_el * p->n_rbf, D = p->d, K3 = p->n_el * p->n_rbf3, D3 = p->d3, KK = K3 * K3;
    const double *restrict Ab = w->Ab;
    double *restrict Gb = w->Gb;
    double e[LANES];
    memset(Gb, 0, sizeof(double) * K * D * LANES);
    for (int L = 0; L < LANES; L++) e[L] = p->w0[s];
    const double *w1 = p->w1 + (int64_t)s * K;
    for (int k = 0; k < K; k++) {
        for (int L = 0; L < LANES; L++) {
            e[L] += w1[k] * Ab[(k * D) * LANES + L];
            Gb[(k * D) * LANES + L] += w1[k];
        }
    }
    if (p->has_pairs) {  /* G += (W + Wᵀ) A, E += ½ A·(W + Wᵀ) A */
        const double *ws = p->w2sym + (int64_t)s * K * K * D;
        double e2[LANES] = {0};
        for (int a = 0; a < K; a++) {
            double g[MAX_Y * LANES];
            memset(g, 0, sizeof(double) * D * LANES);
            for (int b = 0; b < K; b++) {
                const double *wab = ws + ((int64_t)a * K + b) * D, *ab = Ab + (int64_t)b * D * LANES;
                for (int m = 0; m < D; m++) {
                    const double wm = wab[m];
                    if (wm == 0.0) continue;
                    for (int L = 0; L < LANES; L++) g[m * LANES + L] += wm * ab[m * LANES + L];
                }
            }
            const double *aa = Ab + (int64_t)a * D * LANES;
            double *ga = Gb + (int64_t)a * D * LANES;
            for (int q = 0; q < D * LANES; q++) {
                e2[q % LANES] += aa[q] * g[q];
                ga[q] += g[q];
            }
        }
        for (int L = 0; L < LANES; L++) e[L] += 0.5 * e2[L];
    }
    if (p->n_entries) {
        double *restrict X = w->Xb, *restrict GX = w->GXb, *restrict U = w->U, *restrict dU = w->dU;
        memset(GX, 0, sizeof(double) * K3 * D3 * LANES);
        const double *w3 = p->w3 + (int64_t)s * p->n_entries;
        for (int sl = 0; sl < p->n_slots; sl++) {
            memset(U, 0, sizeof(double) * KK * LANES);
            memset(dU, 0, sizeof(double) * KK * LANES);
            /* U_ab = Σ_nz C A'_a,m1 A'_b,m2 for this slot */
            for (int z = p->cg_start[sl]; z < p->cg_start[sl + 1]; z++) {
                const double v = p->cg_val[z], *x1 = X + p->cg_m1[z] * K3 * LANES, *x2 = X + p->cg_m2[z] * K3 * LANES;
                for (int a = 0; a < K3; a++) {
                    double c1[LANES];
                    for (int L = 0; L < LANES; L++) c1[L] = v * x1[a * LANES + L];
                    double *row = U + (int64_t)a * K3 * LANES;
                    for (int b = 0; b < K3; b++)
                        for (int L = 0; L < LANES; L++) row[b * LANES + L] += c1[L] * x2[b * LANES + L];
                }
            }
            /* the entries of each group share their third factor A'_c,m3 */
            const int m3 = p->slot_m[sl];
            for (int gi = p->group_start[sl]; gi < p->group_start[sl + 1]; gi++) {
                const int xi = (m3 * K3 + p->group_c[gi]) * LANES;
                double acc[LANES] = {0}, x[LANES];
                for (int L = 0; L < LANES; L++) x[L] = X[xi + L];
                for (int en = p->entry_start[gi]; en < p->entry_start[gi + 1]; en++) {
                    const double we = w3[en];
                    const int ui = p->entry_ab[en] * LANES;
                    for (int L = 0; L < LANES; L++) {
                        acc[L] += we * U[ui + L];
                        dU[ui + L] += we * x[L];
                    }
                }
                for (int L = 0; L < LANES; L++) {
                    e[L] += acc[L] * x[L];
                    GX[xi + L] += acc[L];
                }
            }
            /* back through U to its two factors */
            for (int z = p->cg_start[sl]; z < p->cg_start[sl + 1]; z++) {
                const double v = p->cg_val[z];
                const int o1 = p->cg_m1[z] * K3 * LANES, o2 = p->cg_m2[z] * K3 * LANES;
                for (int a = 0; a < K3; a++) {
                    const double *row = dU + (int64_t)a * K3 * LANES;
                    double dot[LANES] = {0}, c1[LANES];
                    for (int b = 0; b < K3; b++)
                        for (int L = 0; L < LANES; L++) dot[L] += row[b * LANES + L] * X[o2 + b * LANES + L];
                    for (int L = 0; L < LANES; L++) {
                        GX[o1 + a * LANES + L] += v * dot[L];
                        c1[L] = v * X[o1 + a * LANES + L];
                    }
                    for (int b = 0; b < K3; b++)
                        for (int L = 0; L < LANES; L++) GX[o2 + b * LANES + L] += c1[L] * row[b * LANES + L];
                }
            }
        }
    }
    for (int L = 0; L < LANES; L++) energy[L] = e[L];
}

/* energies (N,) and forces (N, 3) of the atoms (species: their element index) on the graph `edges`. Returns 0,
 * or 1 when out of memory. */
int ace_energies_forces(const AceParams *p, int64_t n_atoms, const int64_t *species, const Edges *edges,
                        int32_t n_threads, double *energies, double *forces) {
    const int K = p->n_el * p->n_rbf, D = p->d, K3 = p->n_el * p->n_rbf3, D3 = p->d3;
    const int chunk = chunk_size(p);
    const int64_t n_edges = edges->n_edges, *edge_j = edges->j;
    /* the edges grouped by centre (a counting sort: a neighbour list need not be ordered) */
    int64_t *start = calloc(n_atoms + 1, sizeof(int64_t)), *order = malloc(sizeof(int64_t) * (n_edges + 1));
    int64_t *fill = malloc(sizeof(int64_t) * (n_atoms + 1));
    double *dvec = calloc(3 * (n_edges + 1), sizeof(double));  /* zero for the edges beyond the cutoff */
    if (!start || !order || !fill || !dvec) {
        free(start); free(order); free(fill); free(dvec);
        return 1;
    }
    for (int64_t e = 0; e < n_edges; e++) start[edges->i[e] + 1]++;
    for (int64_t a = 0; a < n_atoms; a++) start[a + 1] += start[a];
    memcpy(fill, start, sizeof(int64_t) * (n_atoms + 1));
    for (int64_t e = 0; e < n_edges; e++) order[fill[edges->i[e]]++] = e;
    free(fill);
    int64_t max_edges = 0;
    for (int64_t a = 0; a < n_atoms; a++)
        if (start[a + 1] - start[a] > max_edges) max_edges = start[a + 1] - start[a];
    /* atoms sorted by element, cut into blocks of ≤ LANES atoms of one element */
    int64_t *sorted = malloc(sizeof(int64_t) * (n_atoms + 1)), *block_first = malloc(sizeof(int64_t) * (n_atoms + 1));
    int64_t *count = calloc(p->n_el + 1, sizeof(int64_t));
    if (!sorted || !block_first || !count) {
        free(sorted); free(block_first); free(count); free(start); free(order); free(dvec);
        return 1;
    }
    for (int64_t a = 0; a < n_atoms; a++) count[species[a] + 1]++;
    for (int s = 0; s < p->n_el; s++) count[s + 1] += count[s];
    for (int64_t a = 0; a < n_atoms; a++) sorted[count[species[a]]++] = a;
    int64_t n_blocks = 0;
    for (int64_t a = 0; a < n_atoms; a++)
        if (a == 0 || species[sorted[a]] != species[sorted[a - 1]] || a - block_first[n_blocks - 1] == LANES)
            block_first[n_blocks++] = a;
    block_first[n_blocks] = n_atoms;
    int failed = 0;
    if (n_threads < 1) n_threads = 1;
#pragma omp parallel num_threads(n_threads) reduction(|| : failed)
    {
        Work w;
        if (!work_init(&w, p, max_edges)) {
            failed = 1;
        } else {
#pragma omp for schedule(dynamic, 1)
            for (int64_t blk = 0; blk < n_blocks; blk++) {
                const int64_t first = block_first[blk];
                const int lanes = (int)(block_first[blk + 1] - first);
                const int s = (int)species[sorted[first]];
                memset(w.Ab, 0, sizeof(double) * K * D * LANES);
                for (int L = 0; L < lanes; L++) {
                    w.count[L] = atom_bases(p, sorted[first + L], start, order, species, edges, &w,
                                            w.edge + (int64_t)L * chunk * w.atom_capacity,
                                            w.eid + (int64_t)L * LANES * w.atom_capacity);
                    for (int q = 0; q < K * D; q++) w.Ab[q * LANES + L] = w.A[q];
                    for (int c = 0; c < K3; c++) {  /* A'ᵀ (D3, K3): its own density or a slice of A */
                        const double *src = p->separate3 ? w.A3 + c * D3
                                                         : w.A + ((c / p->n_rbf3) * p->n_rbf + c % p->n_rbf3) * D;
                        for (int m = 0; m < D3; m++) w.Xb[(m * K3 + c) * LANES + L] = src[m];
                    }
                }
                for (int L = lanes; L < LANES; L++)
                    for (int q = 0; q < K3 * D3; q++) w.Xb[q * LANES + L] = 0.0;
                double e[LANES];
                block_energy(p, s, &w, e);
                for (int L = 0; L < lanes; L++) {
                    const int64_t i = sorted[first + L];
                    energies[i] = e[L];
                    for (int q = 0; q < K * D; q++) w.G[q] = w.Gb[q * LANES + L];
                    for (int c = 0; c < K3; c++) {  /* ∂E/∂A' into G3, or the slice of G (the adjoint of the copy) */
                        double *dst = p->separate3 ? w.G3 + c * D3 : w.G + ((c / p->n_rbf3) * p->n_rbf + c % p->n_rbf3) * D;
                        for (int m = 0; m < D3; m++) {
                            const double gx = w.GXb[(m * K3 + c) * LANES + L];
                            dst[m] = p->separate3 ? gx : dst[m] + gx;
                        }
                    }
                    atom_gradient(p, species, edges, &w, w.edge + (int64_t)L * chunk * w.atom_capacity,
                                  w.eid + (int64_t)L * LANES * w.atom_capacity, w.count[L], dvec);
                }
            }
        }
        work_free(&w);
    }
    free(sorted); free(block_first); free(count);
    if (failed) {
        free(start); free(order); free(dvec);
        return 1;
    }
    /* F_i = -∂E/∂r_i: each edge's ∂E/∂r_ij pushes i by +dvec and j by -dvec */
    memset(forces, 0, sizeof(double) * 3 * n_atoms);
    for (int64_t i = 0; i < n_atoms; i++) {
        for (int64_t q = start[i]; q < start[i + 1]; q++) {
            const int64_t e = order[q];
            const double *d = dvec + 3 * e;
            double *fi = forces + 3 * i, *fj = forces + 3 * edge_j[e];
            for (int k = 0; k < 3; k++) {
                fi[k] += d[k];
                fj[k] -= d[k];
            }
        }
    }
    free(start); free(order); free(dvec);
    return 0;
}
