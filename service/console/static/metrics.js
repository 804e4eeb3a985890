// Prometheus text exposition: histograms and their percentiles, as Prometheus computes them.

export const QUANTILES = [0.5, 0.9, 0.99];

/** Histograms in Prometheus text: name → [{labels, buckets: [[le, cumulative]], count, sum}]. */
export function parseHistograms(text) {
  const series = new Map();
  const line = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
  for (const raw of text.split("\n")) {
    if (!raw || raw.startsWith("#")) continue;
    const m = line.exec(raw);
    if (!m) continue;
    const [, name, labelText, valueText] = m;
    const suffix = ["_bucket", "_count", "_sum"].find((s) => name.endsWith(s));
    if (!suffix) continue;
    const labels = {};
    for (const lm of (labelText || "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[lm[1]] = lm[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
    }
    const base = name.slice(0, -suffix.length);
    const le = labels.le;
    delete labels.le;
    const key = `${base}|${JSON.stringify(Object.entries(labels).sort())}`;
    if (!series.has(key)) series.set(key, { name: base, labels, buckets: [], count: 0, sum: 0 });
    const s = series.get(key);
    const value = Number(valueText);
    if (suffix === "_bucket") s.buckets.push([le === "+Inf" ? Infinity : Number(le), value]);
    else if (suffix === "_count") s.count = value;
    else s.sum = value;
  }
  const byName = new Map();
  for (const s of series.values()) {
    if (!s.buckets.length) continue;
    s.buckets.sort((a, b) => a[0] - b[0]);
    if (!byName.has(s.name)) byName.set(s.name, []);
    byName.get(s.name).push(s);
  }
  return byName;
}

/** Prometheus's histogram_quantile: linear inside the bucket; the highest finite bound above it. */
export function quantile(q, buckets) {
  const total = buckets[buckets.length - 1][1];
  if (!total) return null;
  const rank = q * total;
  for (let i = 0; i < buckets.length; i++) {
    const [upper, cumulative] = buckets[i];
    if (cumulative < rank) continue;
    if (upper === Infinity) return i > 0 ? buckets[i - 1][0] : null;
    const lower = i > 0 ? buckets[i - 1][0] : 0;
    const below = i > 0 ? buckets[i - 1][1] : 0;
    const inBucket = cumulative - below;
    return inBucket > 0 ? lower + (upper - lower) * ((rank - below) / inBucket) : upper;
  }
  return null;
}
