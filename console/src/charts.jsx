// Small SVG charts (no charting library: two shapes are all the console draws). Each has a text
// equivalent for screen readers (aria-label, and the segment page's table of computations).

export function Sparkline({ values, label, width = 96, height = 24 }) {
  if (!values || values.length < 2) return <span class="muted" aria-label={`${label}: not enough computations`}>–</span>;
  const max = Math.max(...values, 1);
  const step = width / (values.length - 1);
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(height - 2 - (v / max) * (height - 4)).toFixed(1)}`);
  return (
    <svg class="sparkline" width={width} height={height} role="img"
      aria-label={`${label}: ${values.join(", ")}`}>
      <polyline points={points.join(" ")} fill="none" stroke="currentColor" stroke-width="1.5" />
    </svg>
  );
}

/** Member count over time (line) with entered (up) and exited (down) bars per computation, oldest first. */
export function SizeChart({ jobs, width = 640, height = 200 }) {
  const done = jobs.filter((j) => j.status === "done").slice().reverse();
  if (!done.length) return <p class="muted">No finished computation yet.</p>;
  const pad = 32;
  const max = Math.max(...done.map((j) => Math.max(j.member_count || 0, j.entered_count || 0, j.exited_count || 0)), 1);
  const x = (i) => pad + (done.length === 1 ? (width - 2 * pad) / 2 : (i * (width - 2 * pad)) / (done.length - 1));
  const mid = height - pad;
  const y = (v) => mid - (v / max) * (height - 2 * pad);
  const bar = Math.max(2, Math.min(12, (width - 2 * pad) / done.length / 3));
  const summary = done.map((j) => `${j.finished_at}: ${j.member_count} members, +${j.entered_count} −${j.exited_count}`);
  return (
    <svg class="size-chart" width={width} height={height} viewBox={`0 0 ${width} ${height}`} role="img"
      aria-label={`Member count per computation. ${summary.join("; ")}`} data-points={done.length}>
      <line x1={pad} y1={mid} x2={width - pad} y2={mid} class="axis" />
      <text x={4} y={pad} class="tick">{max}</text>
      <text x={4} y={mid} class="tick">0</text>
      {done.map((j, i) => (
        <g key={j.job_id}>
          <rect x={x(i) - bar} y={y(j.entered_count || 0)} width={bar} height={mid - y(j.entered_count || 0)} class="entered">
            <title>{`+${j.entered_count} entered`}</title>
          </rect>
          <rect x={x(i)} y={y(j.exited_count || 0)} width={bar} height={mid - y(j.exited_count || 0)} class="exited">
            <title>{`−${j.exited_count} exited`}</title>
          </rect>
        </g>
      ))}
      <polyline class="members" fill="none" points={done.map((j, i) => `${x(i)},${y(j.member_count || 0)}`).join(" ")} />
      {done.map((j, i) => (
        <circle key={`c${j.job_id}`} cx={x(i)} cy={y(j.member_count || 0)} r="3" class="members-dot">
          <title>{`${j.finished_at}: ${j.member_count} members`}</title>
        </circle>
      ))}
    </svg>
  );
}
