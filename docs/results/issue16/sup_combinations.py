import sys, json, numpy as np
sys.path.insert(0,'.')
from pathlib import Path
from benchmarks.cache_eval import load_cache, metrics
from calibration.methods import NoProgress, fitter
from inspector.methods import patchcore, supervised
from inspector.settings import settings_from_dict
cache = load_cache(Path('/work/featcache/magnetic_256.npz'))
kinds = cache['kinds']; rng = np.random.default_rng(0); seenk=['blowhole','break','crack']
tr=[]
for k in seenk:
    rows=np.flatnonzero(kinds==k); tr+=list(rng.permutation(rows)[:int(round(0.5*len(rows)))])
tr=np.sort(np.array(tr)); rest=np.setdiff1d(np.arange(len(kinds)),tr)
good=rest[kinds[rest]=='good']; seen=rest[np.isin(kinds[rest],seenk)]; unseen=rest[(kinds[rest]!='good')&~np.isin(kinds[rest],seenk)]
cfg=settings_from_dict({"scorer":{"type":"supervised"}},base_dir=Path('/')).scorer
st=fitter('supervised')(cache['train'].astype(np.float32), cfg, 0, NoProgress(), defects=cache['test'][tr].astype(np.float32))
pcs=[];lg=[]
for s in range(0,len(kinds),32):
    f=cache['test'][s:s+32].astype(np.float32)
    pcs.append(patchcore.patch_scores(st.patchcore,f)[0].reshape(len(f),-1).max(1)/st.params.pc_scale)
    lg.append(supervised.image_logits(supervised.patch_logits(st.classifier,f),4))
pc=np.concatenate(pcs); l=np.concatenate(lg); p=1/(1+np.exp(-l))
np.savez('/tmp/seed/sup_combo.npz', pc=pc, logit=l)
for name, sc in [('pc',pc),('sum1',pc+p),('sum0.5',pc+0.5*p),('gate1',pc+np.maximum(0,2*p-1)),('gate2',pc+2*np.maximum(0,2*p-1)),('max',np.maximum(pc,2*p)),('relu_logit0.2',pc+0.2*np.maximum(l,0))]:
    print(name, {k: metrics(sc,None,cache,np.concatenate([good,r])) for k,r in (('seen',seen),('unseen',unseen))})
