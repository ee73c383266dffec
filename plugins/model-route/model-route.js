// grok2api proxy-selector plugin in JavaScript: routes models to groups of proxies.
//
// Config ([plugins.config.NAME] in setting.toml):
//   routes = [ { model = "grok-4*", host = "10.0.0.*" }, { model = "*", source = "pool" } ]
// The first route whose `model` pattern matches the request decides which candidates may serve it (by `host`
// pattern and/or `source`); among those, the healthy one with the lowest latency wins. No route or no
// matching healthy proxy: `default`, and the built-in selector decides.
import { log } from 'grok2api:plugin/host@0.1.0';

let routes = [];

function glob(pattern, text) {
  if (pattern === undefined || pattern === '*') return true;
  const parts = pattern.split('*');
  if (parts.length === 1) return pattern === text;
  if (!text.startsWith(parts[0])) return false;
  let at = parts[0].length;
  for (let i = 1; i < parts.length - 1; i++) {
    const j = text.indexOf(parts[i], at);
    if (j < 0) return false;
    at = j + parts[i].length;
  }
  const last = parts[parts.length - 1];
  return text.length - last.length >= at && text.endsWith(last);
}

export const lifecycle = {
  describe() {
    return { name: 'model-route', version: '0.1.0', description: 'routes models to proxy groups (JavaScript)' };
  },
  init(config) {
    const c = JSON.parse(config || '{}');
    if (c.routes !== undefined && !Array.isArray(c.routes)) throw 'routes must be a list';
    routes = (c.routes || []).map((r, i) => {
      if (typeof r !== 'object' || r === null) throw `route ${i} must be a table`;
      return { model: r.model ?? '*', host: r.host, source: r.source };
    });
    log('info', `model-route: ${routes.length} routes`);
  },
};

export const selector = {
  select(request, candidates) {
    const route = routes.find((r) => glob(r.model, request.model));
    if (!route) return { tag: 'default' };
    let best;
    for (const c of candidates) {
      if (!c.healthy || !glob(route.host, c.host)) continue;
      if (route.source !== undefined && route.source !== c.source) continue;
      const lat = c.ewmaLatencyMs ?? 1e9;
      if (best === undefined || lat < best.lat) best = { id: c.id, lat };
    }
    return best === undefined ? { tag: 'default' } : { tag: 'use-candidate', val: best.id };
  },
};
