/* The classical MM prior's energy terms over fixed index lists, energies per copy and gradients by hand
 * (ffspace.potential.direct_priors.FixedTopologyMM: the same formulas as its numpy version, which tests compare
 * with the eager model's autograd). Positions (n, 3) float64; index arrays int64; `copy_atoms` atoms per copy, a
 * term's energy going to the copy of its owner atom (bond: first atom, angle/improper: centre, torsion: b,
 * pair: i). grad (n, 3) and energy (copies) are accumulated into (the caller zeroes them). */
#include <math.h>
#include <stdint.h>

static inline void sub(const double *p, int64_t a, int64_t b, double *out) {  /* p[a] - p[b] */
    out[0] = p[3 * a] - p[3 * b];
    out[1] = p[3 * a + 1] - p[3 * b + 1];
    out[2] = p[3 * a + 2] - p[3 * b + 2];
}
static inline double dot(const double *u, const double *v) { return u[0] * v[0] + u[1] * v[1] + u[2] * v[2]; }
static inline void cross(const double *u, const double *v, double *out) {
    out[0] = u[1] * v[2] - u[2] * v[1];
    out[1] = u[2] * v[0] - u[0] * v[2];
    out[2] = u[0] * v[1] - u[1] * v[0];
}
static inline void add(double *grad, int64_t a, const double *g, double s) {
    grad[3 * a] += s * g[0];
    grad[3 * a + 1] += s * g[1];
    grad[3 * a + 2] += s * g[2];
}

void mm_bonds(int64_t nb, const int64_t *a, const int64_t *b, const double *k, const double *r0, const double *pos,
              int64_t copy_atoms, double *energy, double *grad) {
    for (int64_t t = 0; t < nb; t++) {
        double v[3];
        sub(pos, b[t], a[t], v);
        double r = sqrt(dot(v, v)), dr = r - r0[t];
        energy[a[t] / copy_atoms] += k[t] * dr * dr;
        double s = 2.0 * k[t] * dr / r;
        add(grad, b[t], v, s);
        add(grad, a[t], v, -s);
    }
}

/* Morse bonds D (1 - e^{-w (r - r0)})^2, w = sqrt(k / D): the harmonic bond's curvature at r0, softening beyond. */
void mm_morse_bonds(int64_t nb, const int64_t *a, const int64_t *b, const double *k, const double *r0,
                    const double *depth, const double *pos, int64_t copy_atoms, double *energy, double *grad) {
    for (int64_t t = 0; t < nb; t++) {
        double v[3];
        sub(pos, b[t], a[t], v);
        double r = sqrt(dot(v, v)), w = sqrt(k[t] / depth[t]), decay = exp(-w * (r - r0[t]));
        energy[a[t] / copy_atoms] += depth[t] * (1.0 - decay) * (1.0 - decay);
        double s = 2.0 * depth[t] * w * (1.0 - decay) * decay / r;
        add(grad, b[t], v, s);
        add(grad, a[t], v, -s);
    }
}

void mm_angles(int64_t na, const int64_t *a, const int64_t *c, const int64_t *b, const double *k, const double *cos0,
               const double *pos, int64_t copy_atoms, double *energy, double *grad) {
    for (int64_t t = 0; t < na; t++) {
        double u[3], v[3], gu[3], gv[3];
        sub(pos, a[t], c[t], u);
        sub(pos, b[t], c[t], v);
        double nu = sqrt(dot(u, u)), nv = sqrt(dot(v, v));
        double cs = dot(u, v) / (nu * nv), de = 2.0 * k[t] * (cs - cos0[t]);
        energy[c[t] / copy_atoms] += k[t] * (cs - cos0[t]) * (cs - cos0[t]);
        for (int d = 0; d < 3; d++) {
            gu[d] = de * (v[d] / (nu * nv) - cs * u[d] / (nu * nu));
            gv[d] = de * (u[d] / (nu * nv) - cs * v[d] / (nv * nv));
        }
        add(grad, a[t], gu, 1.0);
        add(grad, b[t], gv, 1.0);
        add(grad, c[t], gu, -1.0);
        add(grad, c[t], gv, -1.0);
    }
}

void mm_impropers(int64_t ni, const int64_t *n0, const int64_t *centre, const int64_t *n1, const int64_t *n2,
                  const double *k, const double *pos, int64_t copy_atoms, double *energy, double *grad) {
    for (int64_t t = 0; t < ni; t++) {
        double u0[3], u1[3], u2[3], c12[3], c20[3], c01[3], g[3];
        sub(pos, n0[t], centre[t], u0);
        sub(pos, n1[t], centre[t], u1);
        sub(pos, n2[t], centre[t], u2);
        double l0 = sqrt(dot(u0, u0)), l1 = sqrt(dot(u1, u1)), l2 = sqrt(dot(u2, u2)), size = l0 * l1 * l2;
        cross(u1, u2, c12);
        cross(u2, u0, c20);
        cross(u0, u1, c01);
        double h = dot(u0, c12) / size, de = 2.0 * k[t] * h;
        energy[centre[t] / copy_atoms] += k[t] * h * h;
        const double *us[3] = {u0, u1, u2}, *cs[3] = {c12, c20, c01};
        const double ls[3] = {l0, l1, l2};
        const int64_t at[3] = {n0[t], n1[t], n2[t]};
        for (int m = 0; m < 3; m++) {
            for (int d = 0; d < 3; d++) g[d] = de * (cs[m][d] / size - h * us[m][d] / (ls[m] * ls[m]));
            add(grad, at[m], g, 1.0);
            add(grad, centre[t], g, -1.0);
        }
    }
}

void mm_torsions(int64_t nt, const int64_t *a, const int64_t *b, const int64_t *c, const int64_t *d, const double *v,
                 const double *pos, int64_t copy_atoms, double *energy, double *grad) {
    for (int64_t t = 0; t < nt; t++) {
        double b1[3], b2[3], b3[3], m1[3], m2[3], gm1[3], gm2[3], gb1[3], gb2[3], gb3[3], x[3], y[3];
        sub(pos, b[t], a[t], b1);
        sub(pos, c[t], b[t], b2);
        sub(pos, d[t], c[t], b3);
        cross(b1, b2, m1);
        cross(b2, b3, m2);
        double l1 = sqrt(dot(m1, m1)), l2 = sqrt(dot(m2, m2)), cs = dot(m1, m2) / (l1 * l2);
        const double *vn = v + 3 * t;
        energy[b[t] / copy_atoms] += vn[0] * cs + vn[1] * (2 * cs * cs - 1) + vn[2] * (4 * cs * cs * cs - 3 * cs);
        double de = vn[0] + 4.0 * vn[1] * cs + vn[2] * (12.0 * cs * cs - 3.0);
        for (int k = 0; k < 3; k++) {
            gm1[k] = de * (m2[k] / (l1 * l2) - cs * m1[k] / (l1 * l1));
            gm2[k] = de * (m1[k] / (l1 * l2) - cs * m2[k] / (l2 * l2));
        }
        /* m = p × q: ∂(g·m)/∂p = q × g, ∂(g·m)/∂q = g × p */
        cross(b2, gm1, gb1);
        cross(gm1, b1, x);
        cross(b3, gm2, y);
        for (int k = 0; k < 3; k++) gb2[k] = x[k] + y[k];
        cross(gm2, b2, gb3);
        add(grad, a[t], gb1, -1.0);
        add(grad, b[t], gb1, 1.0);
        add(grad, b[t], gb2, -1.0);
        add(grad, c[t], gb2, 1.0);
        add(grad, c[t], gb3, -1.0);
        add(grad, d[t], gb3, 1.0);
    }
}

/* LJ (Lorentz–Berthelot) + Coulomb between pairs (i, j), scaled (1-4 pairs), times the quintic switch from r_on to
 * r_off; pairs at r_off or beyond contribute nothing. */
void mm_pairs(int64_t np, const int64_t *i, const int64_t *j, const double *scale_lj, const double *scale_q,
              const double *sigma, const double *eps, const double *q, double coulomb, double r_on, double r_off,
              const double *pos, int64_t copy_atoms, double *energy, double *grad) {
    for (int64_t t = 0; t < np; t++) {
        double vec[3];
        sub(pos, j[t], i[t], vec);
        double r = sqrt(dot(vec, vec));
        if (r >= r_off) continue;
        double sg = 0.5 * (sigma[i[t]] + sigma[j[t]]), ep = sqrt(eps[i[t]] * eps[j[t]]);
        double x = sg / r, x6 = x * x * x * x * x * x;
        double lj = 4 * ep * (x6 * x6 - x6) * scale_lj[t];
        double dlj = 4 * ep * (-12 * x6 * x6 + 6 * x6) * scale_lj[t] / r;
        double cl = coulomb * q[i[t]] * q[j[t]] * scale_q[t] / r;
        double s = 1.0, ds = 0.0;
        if (r > r_on) {
            double w = (r - r_on) / (r_off - r_on);
            s = 1.0 - w * w * w * (10.0 - 15.0 * w + 6.0 * w * w);
            ds = -30.0 * w * w * (1.0 - w) * (1.0 - w) / (r_off - r_on);
        }
        energy[i[t] / copy_atoms] += (lj + cl) * s;
        double de = ((dlj - cl / r) * s + (lj + cl) * ds) / r;
        add(grad, j[t], vec, de);
        add(grad, i[t], vec, -de);
    }
}
