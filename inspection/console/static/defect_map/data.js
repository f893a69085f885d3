// The map's points arrive as one little-endian byte buffer (inspection/console/map_data.py): columns,
// not rows, so typed arrays view them without parsing anything. Order and types must match POINT_COLUMNS.

export function decode(bytes, n) {
  // A copy gives a buffer of its own, aligned for the 4-byte views whatever the message's offsets.
  const buffer = bytes.slice().buffer;
  let offset = 0;
  const take = (Type) => {
    const view = new Type(buffer, offset, n);
    offset += n * Type.BYTES_PER_ELEMENT;
    return view;
  };
  const points = {
    id: take(Int32Array), x: take(Float32Array), y: take(Float32Array), score: take(Float32Array),
    cls: take(Uint8Array), severity: take(Uint8Array), status: take(Uint8Array), flags: take(Uint8Array),
  };
  if (offset !== buffer.byteLength) throw new Error(`defect map: ${buffer.byteLength} bytes for ${n} points`);
  return points;
}

export const PERIODIC = 1; // flags bit 0: member of a periodic alarm (drawn as a diamond)
export const BOTTOM = 2; // flags bit 1: on the bottom surface

// Defects by surface in keyboard order: along the strip, then across.
export function keyboardOrder(points, n, visible) {
  const order = { top: [], bottom: [] };
  for (let i = 0; i < n; i++) {
    if (visible(i)) order[points.flags[i] & BOTTOM ? "bottom" : "top"].push(i);
  }
  for (const list of Object.values(order)) {
    list.sort((a, b) => points.x[a] - points.x[b] || points.y[a] - points.y[b]);
  }
  return order;
}
