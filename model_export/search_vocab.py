"""Word tables of the search world: a taxonomy of departments, categories and product types, the
attribute values each kind of product can take, and the words titles and queries use for them.

Every value has a *title* form (what sellers write: "Navy", "Men's", "Size 42") and *query*
forms (what shoppers type: "dark blue", "mens", "eu 42"), so that a query and the titles of the
items it wants share fewer words than a lexical matcher would like.  The tables are written in a
small line format so that 400 product types stay readable:

* taxonomy: ``= Department`` starts a department; ``Category [family]: type=syn,syn; ...``
  lists a category's 8 product types, each with its query synonyms;
* value tables: ``name: value{Title form|Title form}=query form,query form; ...``, where the
  title forms default to the value itself.
"""

from __future__ import annotations

from dataclasses import dataclass

ATTRIBUTES = ("brand", "colour", "material", "style", "size", "audience", "season")
TYPES_PER_CATEGORY = 8


@dataclass(frozen=True)
class Forms:
    value: str  # the canonical value, as the catalog column holds it
    title: tuple[str, ...]  # how titles write it
    query: tuple[str, ...]  # how shoppers type it instead (the value itself is also typed)


@dataclass(frozen=True)
class Category:
    department: str
    name: str
    family: str  # key of FAMILIES: which attribute tables its product types draw from
    types: tuple[Forms, ...]  # TYPES_PER_CATEGORY product types; title form = the type itself


_TAXONOMY = """
= Clothing
Tops [apparel]: t-shirt=tee,tshirt,t shirt; shirt=button down,button up; blouse=top,dressy top; \
polo shirt=polo,golf shirt; hoodie=hoody,hooded sweatshirt; sweater=jumper,pullover,knit; \
tank top=singlet,vest top,tank; cardigan=cardi,knit jacket
Bottoms [apparel]: jeans=denims,denim pants; chinos=khakis,chino pants; shorts=short pants,bermudas; \
skirt=mini skirt,midi; leggings=tights,yoga pants; joggers=sweatpants,track pants; trousers=pants,slacks; \
cargo pants=cargos,utility pants
Outerwear [apparel]: jacket=coat,bomber; overcoat=long coat,trench; parka=puffer,down coat; \
raincoat=rain jacket,waterproof jacket; gilet=vest,body warmer; blazer=sport coat,suit jacket; \
windbreaker=wind jacket,shell jacket; fleece=fleece jacket,polar fleece
Dresses [apparel]: maxi dress=long dress,maxi; midi dress=midi,knee dress; \
sundress=summer dress,beach dress; jumpsuit=onesie,all in one; evening gown=gown,formal dress; \
shirt dress=shirtdress,button dress; romper=playsuit,short jumpsuit; wrap dress=wrap,faux wrap dress
Sleep & Underwear [apparel]: boxer briefs=boxers,underpants,trunks; bra=bralette,brassiere; \
socks=sox,ankle socks; pajamas=pjs,pyjamas,sleepwear; bathrobe=robe,dressing gown; \
undershirt=base layer,vest; tights=pantyhose,stockings; nightgown=nightie,nightdress
= Shoes & Bags
Athletic Shoes [footwear]: sneakers=trainers,running shoes,kicks; running shoes=runners,jogging shoes; \
basketball shoes=hoops shoes,high tops; tennis shoes=court shoes,tennis trainers; \
training shoes=gym shoes,cross trainers; walking shoes=walkers,comfort shoes; \
trail shoes=trail runners,off road shoes; skate shoes=skater shoes,vans style
Casual Shoes [footwear]: loafers=slip ons,moccasins; boots=booties,ankle boots; \
sandals=flip flops,slides; oxfords=dress shoes,lace ups; espadrilles=jute shoes,canvas flats; \
clogs=mules,garden clogs; ballet flats=flats,pumps; chelsea boots=slip on boots,elastic boots
Handbags [bags]: tote bag=tote,shopper; shoulder bag=shoulder purse,hobo bag; \
clutch=evening bag,clutch purse; crossbody bag=crossbody,sling bag; satchel=doctor bag,top handle bag; \
bucket bag=drawstring bag,bucket purse; wallet=purse,billfold; belt bag=bum bag,fanny pack,waist bag
Luggage [bags]: suitcase=luggage,trolley; carry-on=cabin bag,carry on; \
duffel bag=duffle,holdall,weekender; garment bag=suit bag,suit carrier; \
travel backpack=travel pack,rucksack; toiletry bag=wash bag,dopp kit; \
packing cubes=packing organisers,cubes; luggage tag=bag tag,id tag
Backpacks [bags]: backpack=rucksack,bookbag,knapsack; laptop backpack=computer bag,laptop bag; \
school bag=schoolbag,book bag; hiking daypack=daypack,hiking bag; drawstring bag=gym sack,cinch bag; \
messenger bag=courier bag,satchel bag; rolling backpack=wheeled backpack,trolley backpack; \
mini backpack=small backpack,petite backpack
= Sports & Outdoors
Running [activewear]: running shorts=run shorts,jogging shorts; \
running tights=compression tights,run tights; running vest=hydration vest,race vest; \
running jacket=run jacket,jogging jacket; sports bra=running bra,gym bra; running cap=run hat,visor; \
armband=phone armband,arm pouch; reflective vest=hi vis vest,safety vest
Fitness [equipment]: dumbbells=hand weights,free weights; kettlebell=kettle bell,kb; \
yoga mat=exercise mat,gym mat; resistance bands=exercise bands,loop bands; \
jump rope=skipping rope,speed rope; foam roller=massage roller,roller; \
pull-up bar=chin up bar,doorway bar; ab wheel=ab roller,core wheel
Camping [equipment]: tent=dome tent,pop up tent; sleeping bag=sleepingbag,bedroll; \
camping chair=folding chair,camp chair; headlamp=head torch,head light; \
camping stove=gas stove,backpacking stove; cooler box=cool box,ice chest; \
hammock=camping hammock,swing bed; lantern=camp light,camping lamp
Cycling [equipment]: bike helmet=cycling helmet,bicycle helmet; bike light=bicycle light,cycle lamp; \
bike lock=bicycle lock,u lock; cycling gloves=bike gloves,mitts; bike pump=tyre pump,floor pump; \
water bottle=drink bottle,bidon; saddle bag=seat bag,bike bag; cycling jersey=bike jersey,cycle top
Team Sports [equipment]: football=soccer ball,footie ball; basketball=bball,hoops ball; \
shin guards=shin pads,leg guards; goalkeeper gloves=goalie gloves,keeper gloves; \
volleyball=beach ball,vball; tennis racket=tennis racquet,racquet; baseball bat=slugger,bat; \
hockey stick=field hockey stick,ice hockey stick
= Electronics
Audio [tech]: headphones=headset,cans,over ear; earbuds=earphones,in ear,buds; \
bluetooth speaker=bt speaker,portable speaker; soundbar=sound bar,tv speaker; \
turntable=record player,vinyl player; microphone=mic,usb mic; amplifier=amp,hifi amp; \
radio=dab radio,fm radio
Computers [tech]: laptop=notebook,notebook computer; keyboard=kb,mechanical keyboard; \
mouse=mice,wireless mouse; monitor=screen,display; webcam=web camera,pc camera; \
usb hub=usb splitter,dock; external hard drive=external hdd,portable drive; \
laptop stand=notebook stand,laptop riser
Phones & Accessories [tech]: smartphone=mobile phone,cell phone,phone; phone case=cover,phone cover; \
charger=charging plug,wall charger; power bank=portable charger,battery pack; \
charging cable=usb cable,charge cord; screen protector=tempered glass,screen guard; \
car mount=phone holder,car holder; wireless charger=charging pad,qi charger
Cameras [tech]: digital camera=camera,compact camera; action camera=action cam,sports cam; \
tripod=camera stand,tripod stand; camera bag=camera case,photo bag; memory card=sd card,micro sd; \
lens=camera lens,zoom lens; ring light=selfie light,led ring; drone=quadcopter,camera drone
Smart Home [tech]: smart plug=wifi plug,smart socket; smart bulb=wifi bulb,smart light; \
security camera=cctv,ip camera; video doorbell=smart doorbell,ring doorbell; \
smart speaker=voice assistant,smart assistant; thermostat=smart thermostat,heating control; \
router=wifi router,modem; robot vacuum=robovac,robot hoover
= Home & Kitchen
Cookware [cookware]: frying pan=skillet,fry pan; saucepan=sauce pot,pot; wok=stir fry pan,wok pan; \
dutch oven=casserole,cocotte; baking tray=sheet pan,baking sheet; stockpot=soup pot,stock pot; \
grill pan=griddle,griddle pan; pressure cooker=instant pot,instapot
Small Appliances [appliance]: kettle=electric kettle,water boiler; toaster=bread toaster,toastie; \
blender=smoothie maker,liquidiser; coffee maker=coffee machine,espresso machine; \
air fryer=airfryer,oil free fryer; food processor=chopper,mixer; rice cooker=rice maker,rice steamer; \
juicer=juice extractor,squeezer
Tableware [kitchen]: mug=cup,coffee cup; dinner plate=plate,dinnerware; bowl=soup bowl,cereal bowl; \
wine glass=wine glasses,stemware; cutlery set=flatware,silverware; teapot=tea pot,tea kettle; \
serving platter=platter,serving tray; water jug=pitcher,carafe
Kitchen Tools [kitchen]: chef knife=kitchen knife,cooks knife; \
cutting board=chopping board,chopping block; spatula=turner,flipper; mixing bowl=prep bowl,baking bowl; \
measuring cups=measuring set,measure cups; grater=cheese grater,zester; colander=strainer,sieve; \
peeler=vegetable peeler,potato peeler
Storage [kitchen]: food container=tupperware,lunch box; spice rack=spice organiser,herb rack; \
bread bin=bread box,bread keeper; storage jar=canister,mason jar; \
reusable bottle=drinks bottle,water flask; thermos=flask,vacuum flask; \
dish rack=drying rack,dish drainer; trash can=bin,rubbish bin,garbage can
= Home & Furniture
Living Room [decor]: sofa=couch,settee; armchair=accent chair,lounge chair; \
coffee table=centre table,cocktail table; tv stand=tv unit,media console; \
bookshelf=bookcase,shelving unit; floor lamp=standing lamp,standard lamp; rug=carpet,area rug; \
side table=end table,lamp table
Bedroom [bedding]: duvet=comforter,quilt; pillow=bed pillow,pillows; bed sheet=fitted sheet,sheets; \
duvet cover=comforter cover,quilt cover; mattress topper=mattress pad,overlay; \
throw blanket=throw,blanket; bed frame=bed base,bedstead; wardrobe=closet,armoire
Lighting [decor]: pendant light=ceiling light,hanging lamp; table lamp=desk lamp,bedside lamp; \
wall light=sconce,wall lamp; fairy lights=string lights,twinkle lights; \
chandelier=crystal light,ceiling chandelier; led strip=light strip,led tape; \
night light=nightlight,plug in light; lamp shade=lampshade,shade
Decor [decor]: wall mirror=mirror,vanity mirror; vase=flower vase,bud vase; \
picture frame=photo frame,frame; candle=scented candle,candles; wall clock=clock,kitchen clock; \
cushion=throw pillow,cushion cover; artificial plant=fake plant,faux plant; wall art=canvas print,poster
Bathroom [decor]: bath towel=towel,bath sheet; bath mat=shower mat,bathroom rug; \
shower curtain=shower liner,curtain; toothbrush holder=toothbrush cup,brush holder; \
soap dispenser=soap pump,lotion dispenser; towel rail=towel rack,towel bar; \
laundry basket=hamper,laundry hamper; bathroom scale=scales,weighing scale
= Beauty & Personal Care
Skincare [beauty]: face serum=serum,facial serum; moisturiser=moisturizer,face cream; \
cleanser=face wash,facial cleanser; sunscreen=sunblock,spf; face mask=sheet mask,clay mask; \
eye cream=under eye cream,eye gel; toner=facial toner,essence; night cream=overnight cream,sleeping mask
Hair Care [beauty]: shampoo=hair wash,shampoo bar; conditioner=hair conditioner,rinse; \
hair oil=hair serum,argan hair oil; hair mask=hair treatment,deep conditioner; \
hair dryer=blow dryer,hairdryer; straightener=flat iron,hair straightener; \
curling iron=curling wand,curler; hair brush=paddle brush,detangling brush
Makeup [beauty]: lipstick=lip colour,lip stick; foundation=base,liquid foundation; \
mascara=lash mascara,lash; eyeliner=eye liner,kohl; eyeshadow palette=eye palette,shadow palette; \
blush=blusher,cheek tint; concealer=cover up,corrector; makeup brushes=brush set,make up brushes
Fragrance [beauty]: perfume=fragrance,scent; eau de toilette=edt,toilette; \
body mist=body spray,fragrance mist; cologne=aftershave,mens fragrance; deodorant=deo,antiperspirant; \
scented oil=perfume oil,roll on perfume; gift set=fragrance set,perfume set; \
travel spray=mini perfume,atomiser
Personal Care [beauty]: electric toothbrush=sonic toothbrush,power toothbrush; razor=shaver,razors; \
beard trimmer=trimmer,clippers; body wash=shower gel,shower cream; hand cream=hand lotion,hand balm; \
body lotion=body cream,body moisturiser; lip balm=chapstick,lip salve; nail polish=nail varnish,polish
= Toys & Games
Building Toys [toys]: building blocks=bricks,blocks; construction set=building set,construction kit; \
magnetic tiles=magnet tiles,magna tiles; marble run=marble track,ball run; \
model kit=model set,scale model; wooden blocks=block set,stacking blocks; \
robot kit=coding robot,stem robot; train set=toy train,railway set
Dolls & Plush [toys]: doll=fashion doll,baby doll; teddy bear=teddy,bear plush; \
plush toy=soft toy,stuffed animal,plushie; dollhouse=doll house,play house; \
action figure=figure,figurine; puppet=hand puppet,finger puppet; doll stroller=toy pram,doll pram; \
unicorn plush=unicorn toy,unicorn teddy
Games & Puzzles [toys]: jigsaw puzzle=puzzle,jigsaw; board game=family game,tabletop game; \
card game=cards,playing cards; chess set=chess,chess board; dice game=dice,dice set; \
trivia game=quiz game,trivia; strategy game=war game,strategy board game; \
puzzle cube=speed cube,magic cube
Outdoor Play [toys]: scooter=kick scooter,kids scooter; trampoline=garden trampoline,rebounder; \
swing set=swing,garden swing; paddling pool=kiddie pool,inflatable pool; \
water gun=water pistol,squirt gun; sandpit=sandbox,sand pit; kite=stunt kite,flying kite; \
balance bike=strider,push bike
Baby & Toddler [toys]: baby gym=play mat,activity gym; rattle=baby rattle,shaker; \
teether=teething toy,teething ring; stacking cups=stacking toy,nesting cups; \
shape sorter=sorting toy,shape puzzle; push walker=baby walker,walker; bath toy=bath toys,rubber duck; \
musical toy=baby piano,music toy
= Pet Supplies
Dog Supplies [pets]: dog bed=pet bed,dog cushion; dog collar=collar,pet collar; dog leash=lead,dog lead; \
dog harness=harness,no pull harness; dog bowl=food bowl,pet bowl; chew toy=dog toy,chewer; \
dog coat=dog jacket,dog jumper; dog crate=kennel,pet crate
Cat Supplies [pets]: cat tree=cat tower,scratching post; litter box=litter tray,cat toilet; \
cat bed=cat cushion,kitty bed; cat toy=kitten toy,wand toy; cat carrier=pet carrier,travel crate; \
scratcher=scratch board,scratching pad; cat fountain=water fountain,pet fountain; \
cat flap=pet door,cat door
Pet Grooming [pets]: pet brush=grooming brush,deshedding brush; pet shampoo=dog shampoo,cat shampoo; \
nail clipper=claw clipper,nail trimmer; grooming glove=deshedding glove,pet mitt; \
pet wipes=grooming wipes,dog wipes; dental kit=pet toothbrush,dog toothpaste; \
pet dryer=dog dryer,pet blower; grooming table=pet table,grooming stand
Aquarium [aquarium]: fish tank=aquarium,tank; aquarium filter=tank filter,filter; \
aquarium heater=tank heater,heater; aquarium light=tank light,reef light; air pump=aerator,bubbler; \
gravel=substrate,aquarium sand; fish net=aquarium net,net; \
aquarium decoration=tank ornament,fish ornament
Small Pets [pets]: hamster cage=rodent cage,hamster house; rabbit hutch=bunny hutch,hutch; \
bird cage=birdcage,parrot cage; hay rack=hay feeder,hay manger; \
exercise wheel=hamster wheel,running wheel; pet hideout=hide house,hidey hole; \
water dispenser=drinking bottle,water feeder; pet playpen=play pen,run
= Garden & Tools
Power Tools [tools]: drill=power drill,drill driver; impact driver=impact drill,driver; \
circular saw=skill saw,saw; jigsaw=jig saw,scroll saw; angle grinder=grinder,disc grinder; \
sander=orbital sander,sanding machine; heat gun=hot air gun,paint stripper; \
multi tool=oscillating tool,multitool
Hand Tools [tools]: hammer=claw hammer,mallet; screwdriver set=screwdrivers,driver set; \
wrench=spanner,adjustable spanner; pliers=plier,grips; tape measure=measuring tape,tape; \
spirit level=level,bubble level; utility knife=box cutter,stanley knife; toolbox=tool box,tool chest
Gardening [tools]: garden hose=hose pipe,hose; pruning shears=secateurs,pruners; \
lawn mower=mower,grass cutter; leaf blower=blower,leaf vacuum; watering can=water can,sprinkler can; \
garden gloves=gardening gloves,work gloves; planter=plant pot,flower pot; wheelbarrow=barrow,garden cart
Outdoor Living [decor]: patio set=garden furniture,outdoor furniture; parasol=umbrella,sun umbrella; \
bbq grill=barbecue,grill; fire pit=firepit,brazier; garden bench=outdoor bench,bench; \
sun lounger=lounger,deck chair; solar lights=solar lamps,garden lights; \
outdoor rug=patio rug,outdoor mat
Home Improvement [tools]: paint roller=roller,roller kit; paint brush=brush,decorating brush; \
ladder=step ladder,steps; work light=site light,work lamp; extension cord=extension lead,power strip; \
stud finder=wall scanner,detector; caulking gun=sealant gun,caulk gun; tile cutter=tile saw,tile scorer
"""

_VALUES = """
colour.fashion: black=blk,jet; white=ivory,off white,cream; grey{Grey|Gray}=gray,charcoal,heather; \
navy=dark blue,navy blue; red=burgundy,wine,scarlet; green=olive,khaki,forest; \
blue=light blue,sky blue,denim blue; beige=tan,nude,sand; brown=camel,chocolate,tan brown; \
pink=blush,rose,baby pink; purple=violet,lilac
colour.tech: black=blk,matte black; white=ivory,snow; silver=metallic,chrome; \
grey{Space Grey|Graphite}=gray,space gray; blue=navy,midnight; pink=rose gold,rose; green=sage,mint
colour.home: white=ivory,off white; black=matte black,charcoal; grey{Grey|Gray}=gray,slate; \
natural{Natural|Oak}=wood,light wood,oak colour; blue=navy,teal; green=sage,olive; \
beige=cream,taupe,sand; gold=brass,golden
colour.bright: red=scarlet,crimson; blue=sky blue,royal blue; green=lime,mint; yellow=mustard,lemon; \
pink=fuchsia,hot pink; multicolour{Multicolour|Rainbow}=multicolor,colourful,rainbow; black=blk,jet; \
orange=neon orange,tangerine
material.apparel: cotton=100 cotton,organic cotton; polyester=poly,synthetic; wool=merino,woollen; \
linen=flax,linen blend; denim=jean,chambray; silk=satin,silky; fleece{Fleece|Sherpa}=sherpa,polar; \
viscose=rayon,modal
material.footwear: leather=genuine leather,real leather; mesh=breathable,knit; canvas=fabric,textile; \
suede=nubuck,velour; rubber=waterproof,rubber sole; synthetic=vegan leather,faux leather
material.bags: leather=genuine leather,pu leather; nylon=water resistant,ripstop; \
canvas=cotton canvas,fabric; polyester=poly,oxford cloth; polycarbonate=hard shell,hardshell; \
straw=rattan,woven
material.sport: polyester=poly,dri fit,quick dry; nylon=ripstop,lightweight; rubber=non slip,anti slip; \
steel=metal,iron; aluminium{Aluminium|Aluminum}=aluminum,alloy; foam=eva,memory foam; \
carbon=carbon fibre,carbon fiber
material.tech: plastic=abs,polycarbonate; aluminium{Aluminium|Aluminum}=aluminum,metal; \
glass=tempered,gorilla glass; silicone=rubber,soft touch; leather=vegan leather,pu
material.kitchen: stainless steel{Stainless Steel|18/10 Steel}=stainless,ss,inox,steel; \
glass=borosilicate,pyrex; ceramic=porcelain,stoneware; cast iron=castiron,iron; bamboo=wooden,wood; \
plastic=bpa free,tritan; non-stick{Non-Stick|Nonstick}=non stick,teflon,nonstick; \
copper=copper plated,rose copper
material.decor: wood{Wood|Solid Wood}=wooden,timber,oak; metal=iron,steel; velvet=velour,plush; \
rattan=wicker,cane; marble=stone,marble effect; fabric=upholstered,linen look; glass=clear glass,crystal
material.bedding: cotton=100 cotton,percale; linen=flax,washed linen; \
microfibre{Microfibre|Microfiber}=microfiber,brushed; bamboo=bamboo viscose,bamboo fibre; \
silk=mulberry silk,satin; down=feather,goose down
material.beauty: hyaluronic acid=hyaluronic,ha; vitamin c=vit c,ascorbic; retinol=retinoid,vitamin a; \
aloe vera=aloe,aloevera; argan oil=argan,moroccan oil; shea butter=shea,cocoa butter; \
charcoal=activated charcoal,detox
material.toys: wood{Wood|Wooden}=wooden,timber; plastic=abs,bpa free; plush=soft,cuddly; \
metal=diecast,die cast; silicone=rubber,soft silicone; cardboard=card,paper
material.pets: nylon=webbing,durable; leather=genuine leather,real leather; \
plastic=bpa free,hard plastic; cotton=canvas,fabric; rubber=natural rubber,tough; plush=fleece,soft
material.tools: steel=carbon steel,metal; plastic=abs,polymer; wood{Wood|Hardwood}=wooden,timber; \
aluminium{Aluminium|Aluminum}=aluminum,alloy; fibreglass{Fibreglass|Fiberglass}=fiberglass,composite
style.apparel: casual=everyday,relaxed; formal=smart,office,dressy; sporty=athletic,athleisure,sport; \
vintage=retro,90s; minimalist=basic,plain,simple; streetwear=oversized,street,urban
style.footwear: casual=everyday,lifestyle; sporty=athletic,performance; classic=timeless,heritage; \
outdoor=hiking,all terrain; chunky=platform,dad shoes; slim=low profile,minimal
style.bags: casual=everyday,daily; business=work,office; travel=weekend,trip; vintage=retro,classic; \
minimalist=simple,sleek; designer=luxury,fashion
style.sport: professional=pro,competition; beginner=starter,entry level; lightweight=light,ultralight; \
heavy-duty{Heavy-Duty|Heavy Duty}=heavy duty,durable,sturdy; compact=foldable,portable
style.tech: wireless=cordless,bluetooth,bt; portable=travel,compact; gaming=gamer,rgb; \
professional=pro,studio; noise-cancelling{Noise-Cancelling|ANC}=noise cancelling,anc,noise canceling
style.kitchen: modern=contemporary,sleek; classic=traditional,timeless; professional=pro,chef,commercial; \
minimalist=simple,plain; retro=vintage,50s; rustic=farmhouse,country
style.decor: modern=contemporary,sleek; rustic=farmhouse,country; scandinavian=scandi,nordic; \
industrial=loft,urban; mid-century{Mid-Century|Mid Century}=mid century,mcm,retro; \
boho=bohemian,boho chic
style.beauty: organic=natural,clean; vegan=cruelty free,plant based; \
sensitive{For Sensitive Skin|Sensitive}=gentle,sensitive skin; \
fragrance-free{Fragrance-Free|Unscented}=unscented,fragrance free; \
anti-ageing{Anti-Ageing|Anti-Aging}=anti aging,anti wrinkle
style.toys: educational=learning,stem,montessori; classic=traditional,retro; creative=arts,imaginative; \
interactive=electronic,talking
style.pets: durable=tough,indestructible; orthopedic{Orthopedic|Orthopaedic}=orthopaedic,memory foam; \
reflective=hi vis,night safe; washable=machine washable,easy clean; calming=anti anxiety,cozy
style.tools: cordless=battery,battery powered,18v; corded=mains,plug in; \
heavy-duty{Heavy-Duty|Heavy Duty}=heavy duty,pro,industrial; compact=mini,small; \
ergonomic=comfort grip,soft grip
size.apparel: xs{XS|Extra Small}=extra small,xsmall; s{S|Small}=small,sm; m{M|Medium}=medium,med; \
l{L|Large}=large,lg; xl{XL|Extra Large}=extra large,xlarge; xxl{XXL|2XL}=2xl,xx large,plus size
size.shoe: 37{Size 37|EU 37}=eu37,uk 4; 38{Size 38|EU 38}=eu38,uk 5; 39{Size 39|EU 39}=eu39,uk 6; \
40{Size 40|EU 40}=eu40,uk 6.5; 41{Size 41|EU 41}=eu41,uk 7; 42{Size 42|EU 42}=eu42,uk 8; \
43{Size 43|EU 43}=eu43,uk 9; 44{Size 44|EU 44}=eu44,uk 9.5; 45{Size 45|EU 45}=eu45,uk 10.5
size.dim: small{Small|S}=sm,mini,little; medium{Medium|M}=med,mid size,regular; large{Large|L}=lg,big,xl; \
extra large{Extra Large|XL}=xl,huge,oversized
size.volume: 20l{20L|20 Litre}=20 liter,20 litres; 30l{30L|30 Litre}=30 liter,30 litres; \
40l{40L|40 Litre}=40 liter,40 litres; 55cm{55cm|Cabin Size}=cabin size,55 cm; \
70cm{70cm|Medium Check-In}=medium check in,70 cm
size.capacity: 0.5l{0.5L|500ml}=500 ml,half litre; 1l{1L|1 Litre}=1 liter,1 litre; \
1.5l{1.5L|1.5 Litre}=1.5 liter,1.5 litre; 2l{2L|2 Litre}=2 liter,2 litre; \
5l{5L|5 Litre}=5 liter,family size
size.pan: 20cm{20cm|8 inch}=20 cm,8in,8 inch; 24cm{24cm|9.5 inch}=24 cm,9.5in,medium; \
28cm{28cm|11 inch}=28 cm,11in,large; 32cm{32cm|12.5 inch}=32 cm,12in,xl
size.bed: single{Single|Twin}=twin,single bed; double{Double|Full}=full,double bed; \
queen{Queen|Queen Size}=queen bed,qs; king{King|King Size}=king bed,ks; \
super king{Super King|Cal King}=california king,cal king
size.beauty: 15ml{15ml|0.5 fl oz}=15 ml,mini size; 30ml{30ml|1 fl oz}=30 ml,1oz; \
50ml{50ml|1.7 fl oz}=50 ml,1.7oz; 100ml{100ml|3.4 fl oz}=100 ml,3.4oz; \
250ml{250ml|8.4 fl oz}=250 ml,large size
audience.people: men{Men's|for Men}=mens,male,man,guys; \
women{Women's|for Women}=womens,ladies,female,woman; kids{Kids'|for Kids}=childrens,child,boys,girls,kid; \
unisex{Unisex|for Men and Women}=gender neutral,men and women,adults
audience.kids: toddler{Toddler|for Toddlers}=1 year old,baby,2 year old; \
kids{Kids'|for Kids}=children,child,5 year old,childrens; \
teen{Teen|for Teens}=teenager,12 year old,tween; family{Family|for the Whole Family}=all ages,adults
audience.pets: dog{for Dogs|Dog}=dogs,puppy,pup,doggy; cat{for Cats|Cat}=cats,kitten,kitty; \
small pet{for Small Pets|Small Animal}=hamster,rabbit,guinea pig,bunny
season: summer{Summer|Summer 2026}=hot weather,warm weather,ss; \
winter{Winter|Winter Warm}=cold weather,thermal,aw; spring{Spring|Spring New}=spring summer,transitional; \
autumn{Autumn|Fall}=fall,autumn winter; \
all-season{All-Season|4 Seasons}=all season,year round,all weather
"""

# Which value table each attribute of a family draws from; absent = the attribute does not apply.
FAMILIES: dict[str, dict[str, str]] = {
    "apparel": {
        "colour": "colour.fashion",
        "material": "material.apparel",
        "style": "style.apparel",
        "size": "size.apparel",
        "audience": "audience.people",
        "season": "season",
    },
    "activewear": {
        "colour": "colour.bright",
        "material": "material.sport",
        "style": "style.sport",
        "size": "size.apparel",
        "audience": "audience.people",
        "season": "season",
    },
    "footwear": {
        "colour": "colour.fashion",
        "material": "material.footwear",
        "style": "style.footwear",
        "size": "size.shoe",
        "audience": "audience.people",
        "season": "season",
    },
    "bags": {
        "colour": "colour.fashion",
        "material": "material.bags",
        "style": "style.bags",
        "size": "size.volume",
        "audience": "audience.people",
    },
    "equipment": {
        "colour": "colour.bright",
        "material": "material.sport",
        "style": "style.sport",
        "size": "size.dim",
        "audience": "audience.people",
        "season": "season",
    },
    "tech": {"colour": "colour.tech", "material": "material.tech", "style": "style.tech"},
    "cookware": {
        "colour": "colour.home",
        "material": "material.kitchen",
        "style": "style.kitchen",
        "size": "size.pan",
    },
    "appliance": {
        "colour": "colour.home",
        "material": "material.kitchen",
        "style": "style.kitchen",
        "size": "size.capacity",
    },
    "kitchen": {
        "colour": "colour.home",
        "material": "material.kitchen",
        "style": "style.kitchen",
        "size": "size.dim",
    },
    "decor": {
        "colour": "colour.home",
        "material": "material.decor",
        "style": "style.decor",
        "size": "size.dim",
    },
    "bedding": {
        "colour": "colour.home",
        "material": "material.bedding",
        "style": "style.decor",
        "size": "size.bed",
        "season": "season",
    },
    "beauty": {
        "material": "material.beauty",
        "style": "style.beauty",
        "size": "size.beauty",
        "audience": "audience.people",
    },
    "toys": {
        "colour": "colour.bright",
        "material": "material.toys",
        "style": "style.toys",
        "size": "size.dim",
        "audience": "audience.kids",
    },
    "pets": {
        "colour": "colour.bright",
        "material": "material.pets",
        "style": "style.pets",
        "size": "size.dim",
        "audience": "audience.pets",
    },
    "aquarium": {
        "colour": "colour.bright",
        "material": "material.pets",
        "style": "style.pets",
        "size": "size.dim",
    },
    "tools": {
        "colour": "colour.bright",
        "material": "material.tools",
        "style": "style.tools",
        "size": "size.dim",
    },
}

# Model-line words for cycled categories and product types (more than 50 categories or 8 types
# per category): "Signature Sneakers" is another product type than "Sneakers".
QUALIFIERS = ("signature", "heritage", "origin", "summit", "coastal", "nordic", "atlas", "vertex")
# Words titles add that say nothing about the product; a lexical matcher still matches them.
MARKETING = (
    "Hot Sale", "2026 New", "Free Shipping", "Best Seller", "Limited Edition", "Premium Quality",
    "Gift Idea", "Top Rated", "New Arrival", "Official Store", "Flash Deal", "Bestseller",
)  # fmt: skip
MODEL_WORDS = ("Air", "Pro", "Flex", "Lite", "Zoom", "Plus", "Max", "One", "Go", "Neo", "X2", "S3")
# Words a query or title carries that name no attribute: the old matcher ignores them.
STOPWORDS = frozenset({"for", "and", "with", "the", "a", "by", "in", "of", "new", "-", "|"})


def _parse_forms(entry: str) -> Forms:
    head, _, synonyms = entry.strip().partition("=")
    value, _, titles = head.partition("{")
    value = value.strip()
    title = tuple(t.strip() for t in titles.rstrip("}").split("|")) if titles else (value.title(),)
    return Forms(value, title, tuple(s.strip() for s in synonyms.split(",") if s.strip()))


def _parse_values(text: str) -> dict[str, tuple[Forms, ...]]:
    tables = {}
    for line in text.replace("\\\n", "").strip().splitlines():
        name, _, body = line.partition(":")
        tables[name.strip()] = tuple(_parse_forms(e) for e in body.split(";"))
    return tables


def _parse_taxonomy(text: str) -> tuple[Category, ...]:
    categories = []
    department = ""
    for line in text.replace("\\\n", "").strip().splitlines():
        if line.startswith("="):
            department = line[1:].strip()
            continue
        head, _, body = line.partition(":")
        name, _, family = head.partition("[")
        types = tuple(_parse_forms(e) for e in body.split(";"))
        categories.append(Category(department, name.strip(), family.rstrip("]").strip(), types))
    return tuple(categories)


VALUES = _parse_values(_VALUES)
TAXONOMY = _parse_taxonomy(_TAXONOMY)
