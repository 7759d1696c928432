# R mirai's quick start, as its README has it, run on this package.
library(mirai)
daemons(5)

m <- mirai({
  Sys.sleep(1)
  100 + 42
})

mp <- mirai_map(1:9, \(x) {
  Sys.sleep(1)
  x^2
})

print(m)
print(m[])

print(mp)
print(mp[.flat])

daemons(0)
